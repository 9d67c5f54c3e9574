"""Every metric of one evaluation, from cached renders and features, with intervals and labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evaluation import metrics, motion
from evaluation.config import EvaluationConfig
from evaluation.features import FeatureStore
from evaluation.stats import PairedSummary, paired_summary

SIDES = ("base", "adapter")
DYNAMIC_SPEED = 0.005  # flow per frame width above which a clip counts as moving (VBench-like)


@dataclass
class Sample:
    """One prompt and seed rendered on both sides: side → (render key, mp4 path)."""

    prompt: str
    group: str
    seed: int
    renders: dict[str, tuple[str, Path]]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # side → name → value


@dataclass
class Scored:
    scores: dict[str, float]
    labels: dict[str, str]  # score name → backend label
    unavailable: dict[str, str]  # metric → reason
    stats: dict[str, dict[str, Any]]  # metric → PairedSummary.as_dict()


def score(
    samples: list[Sample],
    references: list[Path],
    training: list[Path],
    store: FeatureStore,
    cfg: EvaluationConfig,
) -> Scored:
    """All metrics; each block adds its scores or says why it is unavailable."""
    out = Scored({}, {}, {}, {})
    ref = np.concatenate([store.image(p) for p in references])
    img = store.label("image")
    for s in tqdm(samples, desc="evaluate: features", unit="pair", leave=False):
        for side in s.renders:  # base, adapter (and champion when there is one)
            key, path = s.renders[side]
            feats = store.image(path, key)
            s.scores[side] = {
                "fidelity": metrics.fidelity(feats, ref),
                "temporal_consistency": metrics.temporal_consistency(feats),
                **{f"motion_{k}": v for k, v in store.motion(path, key).items()},
            }
    subject = [s for s in samples if s.group != "prior_preservation"]
    _fidelity(out, subject, cfg, img)
    _normalised_fidelity(out, references, store, img)
    _vs_champion(out, subject, cfg, img)
    _per_side_means(out, subject, img)
    _reference_motion(out, references, store)
    _diversity(out, subject, store, img)
    _copying(out, samples, training, store, cfg, img)
    _prior(out, [s for s in samples if s.group == "prior_preservation"], store, cfg, img)
    _adherence(out, subject, store, cfg)
    _fvd(out, subject, references, store, cfg)
    return out


def _add(out: Scored, name: str, value: float, backend: str) -> None:
    out.scores[name] = float(value)
    out.labels[name] = backend


def summarise(
    diffs: dict[tuple[str, int], float], cfg: EvaluationConfig, bound: float = 0.0
) -> PairedSummary:
    """The configured interval (and its dual test against `bound`) over per-prompt means."""
    s = cfg.stats
    return paired_summary(
        diffs, s.confidence, bound=bound, method=s.method, resamples=s.resamples, seed=s.seed
    )


def add_summary(out: Scored, name: str, summary: PairedSummary, backend: str) -> None:
    """`name` (the mean), `name_ci_low` / `_ci_high` when an interval exists, and its stats."""
    _add(out, name, summary.mean, backend)
    for end in ("ci_low", "ci_high"):
        value = getattr(summary, end)
        if np.isfinite(value):  # one prompt: no interval, and no score pretending to be one
            _add(out, f"{name}_{end}", value, backend)
    out.stats[name] = summary.as_dict()


def _fidelity(out: Scored, subject: list[Sample], cfg: EvaluationConfig, img: str) -> None:
    diffs = {
        (s.prompt, s.seed): s.scores["adapter"]["fidelity"] - s.scores["base"]["fidelity"]
        for s in subject
    }
    summary = summarise(diffs, cfg, cfg.gate.min_fidelity_lift_ci_low)
    for side in SIDES:
        _add(out, f"fidelity_{side}", np.mean([s.scores[side]["fidelity"] for s in subject]), img)
    add_summary(out, "fidelity_lift", summary, img)
    if summary.p_value is not None:
        _add(out, "fidelity_lift_p", summary.p_value, img)
    if summary.wilcoxon_p is not None:
        _add(out, "fidelity_lift_wilcoxon_p", summary.wilcoxon_p, img)
    if summary.effect_dz is not None:
        _add(out, "fidelity_lift_effect_dz", summary.effect_dz, img)
    for group in ("in_distribution", "out_of_distribution"):
        rows = [s for s in subject if s.group == group]
        for side in SIDES:
            if rows:
                value = np.mean([s.scores[side]["fidelity"] for s in rows])
                _add(out, f"fidelity_{group}_{side}", value, img)


def _normalised_fidelity(
    out: Scored, references: list[Path], store: FeatureStore, img: str
) -> None:
    """DreamBooth's reading of fidelity: 0 at the base model's floor, 1 at the reference ceiling
    (how alike the reference clips are to each other: each against all the others)."""
    if len(references) < 2:
        out.unavailable["fidelity_normalised"] = "needs at least two reference clips (ceiling)"
        return
    ceiling = metrics.reference_ceiling([store.image(p) for p in references])
    _add(out, "fidelity_reference_ceiling", ceiling, img)
    floor = out.scores["fidelity_base"]
    if ceiling - floor <= 1e-6:
        out.unavailable["fidelity_normalised"] = (
            f"the base already matches the references as well as they match each other "
            f"(base {floor:.4f}, ceiling {ceiling:.4f})"
        )
        return
    value = metrics.normalised(out.scores["fidelity_adapter"], floor, ceiling)
    _add(out, "fidelity_normalised", value, img)


def _vs_champion(out: Scored, subject: list[Sample], cfg: EvaluationConfig, img: str) -> None:
    """Adapter against the registry's current champion, same prompts and seeds."""
    if not subject or "champion" not in subject[0].renders:
        out.unavailable["champion"] = "no champion to compare with (none registered, or itself)"
        return
    diffs = {
        (s.prompt, s.seed): s.scores["adapter"]["fidelity"] - s.scores["champion"]["fidelity"]
        for s in subject
    }
    summary = summarise(diffs, cfg, cfg.gate.min_lift_vs_champion_ci_low or 0.0)
    _add(
        out, "fidelity_champion", np.mean([s.scores["champion"]["fidelity"] for s in subject]), img
    )
    add_summary(out, "fidelity_lift_vs_champion", summary, img)


def _per_side_means(out: Scored, subject: list[Sample], img: str) -> None:
    flow = motion.backend_label()
    for side in SIDES:
        rows = [s.scores[side] for s in subject]
        tc = np.mean([r["temporal_consistency"] for r in rows])
        _add(out, f"temporal_consistency_{side}", tc, img)
        _add(out, f"motion_speed_{side}", np.mean([r["motion_speed_rel"] for r in rows]), flow)
        _add(
            out, f"motion_smoothness_{side}", np.mean([r["motion_smoothness"] for r in rows]), flow
        )
        moving = np.mean([r["motion_speed_rel"] > DYNAMIC_SPEED for r in rows])
        _add(out, f"dynamic_degree_{side}", moving, flow)


def _reference_motion(out: Scored, references: list[Path], store: FeatureStore) -> None:
    """How much the reference clips move: the motion rule applies only when they do."""
    speeds = [store.motion(p)["speed_rel"] for p in references]
    flow = motion.backend_label()
    _add(out, "motion_speed_reference", np.mean(speeds), flow)
    _add(out, "dynamic_degree_reference", np.mean([v > DYNAMIC_SPEED for v in speeds]), flow)


def _diversity(out: Scored, subject: list[Sample], store: FeatureStore, img: str) -> None:
    prompts = sorted({s.prompt for s in subject})
    if len({s.seed for s in subject}) < 2:
        out.unavailable["diversity"] = "needs at least two seeds per prompt"
        return
    for side in SIDES:
        per_prompt = [
            metrics.diversity(
                [
                    store.image(s.renders[side][1], s.renders[side][0])
                    for s in subject
                    if s.prompt == p
                ]
            )
            for p in prompts
        ]
        _add(out, f"diversity_{side}", np.mean(per_prompt), img)


def _copying(
    out: Scored,
    samples: list[Sample],
    training: list[Path],
    store: FeatureStore,
    cfg: EvaluationConfig,
    img: str,
) -> None:
    if not training:
        out.unavailable["copy_detection"] = "no curated training clips (run `ltx-lora curate`)"
        return
    train = np.concatenate([store.image(p) for p in training])
    for side in SIDES:
        closest = []
        for s in samples:
            key, path = s.renders[side]
            sim = metrics.max_similarity(store.image(path, key), train)
            s.scores[side]["copy_similarity"] = sim
            closest.append(sim)
        _add(out, f"copy_max_similarity_{side}", max(closest), img)
        copies = np.mean([c >= cfg.gate.copy_threshold for c in closest])
        _add(out, f"copy_fraction_{side}", copies, img)


def _prior(
    out: Scored, prior: list[Sample], store: FeatureStore, cfg: EvaluationConfig, img: str
) -> None:
    if not prior:
        out.unavailable["prior_preservation"] = "no prior_preservation prompts in the suite"
        return
    sims = {}
    for s in prior:
        a = store.image(s.renders["adapter"][1], s.renders["adapter"][0])
        b = store.image(s.renders["base"][1], s.renders["base"][0])
        sims[(s.prompt, s.seed)] = s.scores["adapter"]["prior_similarity"] = (
            metrics.paired_frame_similarity(a, b)
        )
    add_summary(out, "prior_preservation", summarise(sims, cfg), img)


def _adherence(
    out: Scored, subject: list[Sample], store: FeatureStore, cfg: EvaluationConfig
) -> None:
    texts = store.texts(sorted({s.prompt for s in subject}))
    if texts is None:
        out.unavailable["prompt_adherence"] = store.unavailable.get("text_image", "")
        return
    by_prompt = dict(zip(sorted({s.prompt for s in subject}), texts, strict=True))
    backend = store.label("text_image")
    diffs = {}
    for s in subject:
        for side in SIDES:
            feats = store.text_image(s.renders[side][1], s.renders[side][0])
            s.scores[side]["adherence"] = float((feats @ by_prompt[s.prompt]).mean())
        diffs[(s.prompt, s.seed)] = s.scores["adapter"]["adherence"] - s.scores["base"]["adherence"]
    for side in SIDES:
        value = np.mean([s.scores[side]["adherence"] for s in subject])
        _add(out, f"prompt_adherence_{side}", value, backend)
    add_summary(out, "prompt_adherence_lift", summarise(diffs, cfg), backend)


def _fvd(
    out: Scored,
    subject: list[Sample],
    references: list[Path],
    store: FeatureStore,
    cfg: EvaluationConfig,
) -> None:
    need = cfg.fvd_min_clips
    if store.backend("video") is None:
        out.unavailable["fvd_kid"] = store.unavailable["video"]
        return
    if len(subject) < need or len(references) < need:
        out.unavailable["fvd_kid"] = (
            f"needs ≥ {need} clips a side (evaluation.fvd_min_clips); have {len(subject)} "
            f"renders and {len(references)} reference clips"
        )
        return
    backend = store.label("video")
    ref = np.stack([store.video(p) for p in references])
    for side in SIDES:
        gen = np.stack([store.video(s.renders[side][1], s.renders[side][0]) for s in subject])
        _add(out, f"fvd_{side}", metrics.frechet_distance(gen, ref), backend)
        _add(out, f"kid_{side}", metrics.kernel_inception_distance(gen, ref), backend)
