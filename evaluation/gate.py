"""The gate policy: scores in, `pass` / `fail` with one reason per broken rule and the evidence
beside each rule out.

One criterion per statistical rule: the interval's lower end against the rule's bound. The test
shown beside it is the interval's dual (one-sided p against the same bound), so the two cannot
disagree; a suite with too few prompts for the configured confidence cannot pass at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evaluation.config import GateConfig
from evaluation.modes import WITH_AUDIO

Stats = dict[str, dict[str, Any]]  # metric → PairedSummary.as_dict()


@dataclass(frozen=True)
class Rule:
    name: str
    text: str  # the rule in words
    held: bool | None  # None: its inputs do not exist here (noted, not failed)
    reason: str  # the line `reasons` gets when it does not hold
    evidence: dict[str, Any]  # what the rule looked at: value, interval, effect size, test


@dataclass(frozen=True)
class Verdict:
    verdict: str  # "pass" | "fail"
    rule: str  # every rule applied, in words
    reasons: list[str]  # one line per broken rule (empty when passed)
    checks: dict[str, bool]  # rule name → held
    evidence: dict[str, dict[str, Any]]  # rule name → its evidence (applied rules only)


def judge(
    scores: dict[str, float],
    gate: GateConfig,
    stats: Stats | None = None,
    mode: str = "text_to_video",
) -> Verdict:
    """Apply every rule whose inputs exist; a guardrail without its score is noted, not failed.
    `mode` (evaluation/modes.py): an audio mode adds the audio rule, and text_to_audio is judged
    on its audio instead of the video lift (its adapter never touches the video)."""
    stats = stats or {}
    rules = [
        _lift_rule(scores, stats, gate) if mode != "text_to_audio" else None,
        _audio_rule(scores, stats, gate, mode),
        _temporal_rule(scores, gate),
        _prior_rule(scores, stats, gate),
        _copy_rule(scores, gate),
        _motion_rule(scores, gate),
        _denoising_rule(scores, stats, gate),
        _champion_rule(scores, stats, gate),
    ]
    applied = [r for r in rules if r is not None and r.held is not None]
    reasons = [r.reason for r in applied if not r.held]
    return Verdict(
        "fail" if reasons else "pass",
        "; ".join(r.text for r in applied),
        reasons,
        {r.name: bool(r.held) for r in applied},
        {r.name: r.evidence for r in applied},
    )


def interval_evidence(summary: dict[str, Any] | None) -> dict[str, Any]:
    """A PairedSummary dict as a rule shows it: mean, interval, effect size, dual test, size."""
    if summary is None:
        return {}
    return {
        "mean": summary["mean"],
        "ci": [summary["ci_low"], summary["ci_high"]],
        "confidence": summary["confidence"],
        "interval": f"{summary['method']} on per-prompt means",
        "effect_dz": summary["effect_dz"],
        "test": f"one-sided {summary['method']} test, H0: mean ≤ {summary['bound']:g}",
        "p": summary["p_value"],
        "n_prompts": summary["n_prompts"],
        "min_prompts": summary["min_prompts"],
    }


def _too_few(summary: dict[str, Any] | None) -> str | None:
    """The refusal when a suite is too small for its interval to mean what it says."""
    if summary is None or summary["sufficient"]:
        return None
    return (
        f"only {summary['n_prompts']} prompts: a {summary['confidence']:.0%} interval needs at "
        f"least {summary['min_prompts']} (add prompts to evaluation.prompts or the dataset's "
        "evaluation.yaml); the gate cannot pass on this suite"
    )


def _lift_rule(scores: dict[str, float], stats: Stats, gate: GateConfig) -> Rule:
    bound, low = gate.min_fidelity_lift_ci_low, scores.get("fidelity_lift_ci_low")
    summary = stats.get("fidelity_lift")
    refusal = _too_few(summary)
    reason = refusal or (
        f"fidelity lift not shown: its CI lower bound "
        f"{float('nan') if low is None else low:.4f} is not above {bound:g}"
    )
    held = refusal is None and bool(_gt(low, bound))
    text = f"fidelity lift CI lower bound > {bound:g}"
    return Rule("fidelity_lift", text, held, reason, interval_evidence(summary))


def _audio_rule(scores: dict[str, float], stats: Stats, gate: GateConfig, mode: str) -> Rule | None:
    """Modes trained on audio: the adapter's sound must be shown closer to the reference clips'
    than the base's (MCD lift); an audio mode without its score fails (it was asked for)."""
    bound = gate.min_audio_mcd_lift_ci_low
    if bound is None or mode not in WITH_AUDIO:
        return None
    low, summary = scores.get("audio_mcd_lift_ci_low"), stats.get("audio_mcd_lift")
    refusal = _too_few(summary)
    reason = refusal or (
        f"audio lift not shown: the MCD lift's CI lower bound "
        f"{float('nan') if low is None else low:.4f} dB is not above {bound:g} (mode {mode})"
    )
    held = refusal is None and bool(_gt(low, bound))
    text = f"audio MCD lift CI lower bound > {bound:g} dB"
    return Rule("audio_lift", text, held, reason, interval_evidence(summary))


def _champion_rule(scores: dict[str, float], stats: Stats, gate: GateConfig) -> Rule | None:
    bound = gate.min_lift_vs_champion_ci_low
    if bound is None:
        return None
    low = scores.get("fidelity_lift_vs_champion_ci_low")
    summary = stats.get("fidelity_lift_vs_champion")
    refusal = _too_few(summary)
    held = _gt(low, bound)
    if held is not None and refusal is not None:
        held = False
    reason = (
        refusal or f"not better than the champion: lift CI lower bound {low or 0:.4f} ≤ {bound:g}"
    )
    text = f"fidelity lift over the champion CI lower bound > {bound:g}"
    return Rule("beats_champion", text, held, reason, interval_evidence(summary))


def _temporal_rule(scores: dict[str, float], gate: GateConfig) -> Rule:
    margin = gate.temporal_consistency_margin
    base, tuned = (
        scores.get("temporal_consistency_base"),
        scores.get("temporal_consistency_adapter"),
    )
    held = None if base is None or tuned is None else tuned >= base - margin
    reason = (
        f"temporal consistency fell from {base or 0:.4f} to {tuned or 0:.4f} (margin {margin:g})"
    )
    text = f"temporal consistency ≥ base − {margin:g}"
    return Rule("temporal_consistency", text, held, reason, {"base": base, "adapter": tuned})


def _prior_rule(scores: dict[str, float], stats: Stats, gate: GateConfig) -> Rule:
    bound, value = gate.min_prior_preservation, scores.get("prior_preservation")
    reason = (
        f"prior preservation {value or 0:.4f} is below {bound:g}: the adapter changes what the "
        "base draws without the subject"
    )
    evidence = interval_evidence(stats.get("prior_preservation"))
    evidence.pop("test", None), evidence.pop("p", None)  # a level, not a tested difference
    return Rule(
        "prior_preservation", f"prior preservation ≥ {bound:g}", _ge(value, bound), reason, evidence
    )


def _copy_rule(scores: dict[str, float], gate: GateConfig) -> Rule:
    share = scores.get("copy_fraction_adapter")
    text = (
        f"≤ {gate.max_copy_fraction:g} of renders within {gate.copy_threshold:g} of a training "
        "frame"
    )
    reason = (
        f"{share or 0:.2%} of adapter renders copy a training frame (cosine ≥ "
        f"{gate.copy_threshold:g})"
    )
    evidence = {"copy_fraction": share, "max_similarity": scores.get("copy_max_similarity_adapter")}
    return Rule("no_copying", text, _le(share, gate.max_copy_fraction), reason, evidence)


def _motion_rule(scores: dict[str, float], gate: GateConfig) -> Rule | None:
    """When the references move, the adapter must not lose the motion the base and the
    references have (a static adapter against moving references fails)."""
    drop = gate.max_dynamic_degree_drop
    ref, base = scores.get("dynamic_degree_reference"), scores.get("dynamic_degree_base")
    tuned = scores.get("dynamic_degree_adapter")
    if drop is None or ref is None or base is None or tuned is None or ref == 0.0:
        return None
    floor = min(base, ref) - drop
    reason = (
        f"the adapter's renders lost their motion: {tuned:.0%} of them move, against {base:.0%} "
        f"of the base's and {ref:.0%} of the reference clips (allowed drop {drop:g})"
    )
    text = f"dynamic degree ≥ min(base, references) − {drop:g} (references move)"
    evidence = {"reference": ref, "base": base, "adapter": tuned, "floor": floor}
    return Rule("motion_kept", text, tuned >= floor - 1e-12, reason, evidence)


def _denoising_rule(scores: dict[str, float], stats: Stats, gate: GateConfig) -> Rule | None:
    bound = gate.max_denoise_error_change_ci_low
    if bound is None:
        return None
    low = scores.get("denoise_error_change_ci_low")
    reason = (
        f"held-out denoising error rose from {scores.get('denoise_error_base', 0):.4f} "
        f"to {scores.get('denoise_error_adapter', 0):.4f} (CI lower bound of the change "
        f"{low or 0:.4f} > {bound:g}): the adapter predicts the reference clips worse "
        "than the base, as a trainer at odds with the sampler's conventions does"
    )
    text = f"held-out denoising error change (adapter − base) CI lower bound ≤ {bound:g}"
    evidence = interval_evidence(stats.get("denoise_error_change"))
    if evidence:  # clusters here are reference clips, not prompts
        evidence["n_clips"] = evidence.pop("n_prompts")
        evidence["interval"] = evidence["interval"].replace("prompt", "clip")
    return Rule("denoising", text, _le(low, bound), reason, evidence)


def _gt(value: float | None, bound: float) -> bool | None:
    return None if value is None else value > bound


def _ge(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _le(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound
