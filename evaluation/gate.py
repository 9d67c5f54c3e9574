"""The gate policy: scores in, `pass` / `fail` with one reason per broken rule out."""

from __future__ import annotations

from dataclasses import dataclass

from evaluation.config import GateConfig


@dataclass(frozen=True)
class Verdict:
    verdict: str  # "pass" | "fail"
    rule: str  # every rule applied, in words
    reasons: list[str]  # one line per broken rule (empty when passed)
    checks: dict[str, bool]  # rule name → held


def judge(scores: dict[str, float], gate: GateConfig) -> Verdict:
    """Apply every rule whose inputs exist; a guardrail without its score is noted, not failed."""
    rules: list[tuple[str, str, bool | None, str]] = [
        (
            "fidelity_lift",
            f"fidelity lift CI lower bound > {gate.min_fidelity_lift_ci_low:g}",
            bool(_gt(scores.get("fidelity_lift_ci_low"), gate.min_fidelity_lift_ci_low)),
            f"fidelity lift not shown: its CI lower bound "
            f"{scores.get('fidelity_lift_ci_low', float('nan')):.4f} is not above "
            f"{gate.min_fidelity_lift_ci_low:g}",
        ),
        (
            "temporal_consistency",
            f"temporal consistency ≥ base − {gate.temporal_consistency_margin:g}",
            _tc(scores, gate.temporal_consistency_margin),
            f"temporal consistency fell from {scores.get('temporal_consistency_base', 0):.4f} "
            f"to {scores.get('temporal_consistency_adapter', 0):.4f} (margin "
            f"{gate.temporal_consistency_margin:g})",
        ),
        (
            "prior_preservation",
            f"prior preservation ≥ {gate.min_prior_preservation:g}",
            _ge(scores.get("prior_preservation"), gate.min_prior_preservation),
            f"prior preservation {scores.get('prior_preservation', 0):.4f} is below "
            f"{gate.min_prior_preservation:g}: the adapter changes what the base draws without "
            "the subject",
        ),
        (
            "no_copying",
            f"≤ {gate.max_copy_fraction:g} of renders within {gate.copy_threshold:g} of a "
            "training frame",
            _le(scores.get("copy_fraction_adapter"), gate.max_copy_fraction),
            f"{scores.get('copy_fraction_adapter', 0):.2%} of adapter renders copy a training "
            f"frame (cosine ≥ {gate.copy_threshold:g})",
        ),
    ]
    if gate.max_denoise_error_change_ci_low is not None:
        bound = gate.max_denoise_error_change_ci_low
        low = scores.get("denoise_error_change_ci_low")
        rules.append(
            (
                "denoising",
                f"held-out denoising error change (adapter − base) CI lower bound ≤ {bound:g}",
                _le(low, bound),
                f"held-out denoising error rose from {scores.get('denoise_error_base', 0):.4f} "
                f"to {scores.get('denoise_error_adapter', 0):.4f} (CI lower bound of the change "
                f"{low or 0:.4f} > {bound:g}): the adapter predicts the reference clips worse "
                "than the base, as a trainer at odds with the sampler's conventions does",
            )
        )
    if gate.min_lift_vs_champion_ci_low is not None:
        bound = gate.min_lift_vs_champion_ci_low
        low = scores.get("fidelity_lift_vs_champion_ci_low")
        rules.append(
            (
                "beats_champion",
                f"fidelity lift over the champion CI lower bound > {bound:g}",
                _gt(low, bound),
                f"not better than the champion: lift CI lower bound {low or 0:.4f} ≤ {bound:g}",
            )
        )
    checks = {name: held for name, _, held, _ in rules if held is not None}
    reasons = [why for _name, _, held, why in rules if held is False]
    applied = [text for _, text, held, _ in rules if held is not None]
    return Verdict("fail" if reasons else "pass", "; ".join(applied), reasons, checks)


def _gt(value: float | None, bound: float) -> bool | None:
    return None if value is None else value > bound


def _ge(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _le(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def _tc(scores: dict[str, float], margin: float) -> bool | None:
    base, tuned = (
        scores.get("temporal_consistency_base"),
        scores.get("temporal_consistency_adapter"),
    )
    return None if base is None or tuned is None else tuned >= base - margin
