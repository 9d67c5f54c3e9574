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
from evaluation.stats import paired_summary

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
    _vs_champion(out, subject, cfg, img)
    _per_side_means(out, subject, img)
    _diversity(out, subject, store, img)
    _copying(out, samples, training, store, cfg, img)
    _prior(out, [s for s in samples if s.group == "prior_preservation"], store, cfg, img)
    _adherence(out, subject, store, cfg)
    _fvd(out, subject, references, store, cfg)
    return out


def _add(out: Scored, name: str, value: float, backend: str) -> None:
    out.scores[name] = float(value)
    out.labels[name] = backend


def _fidelity(out: Scored, subject: list[Sample], cfg: EvaluationConfig, img: str) -> None:
    diffs = {
        (s.prompt, s.seed): s.scores["adapter"]["fidelity"] - s.scores["base"]["fidelity"]
        for s in subject
    }
    summary = paired_summary(diffs, cfg.stats.resamples, cfg.stats.confidence, cfg.stats.seed)
    for side in SIDES:
        _add(out, f"fidelity_{side}", np.mean([s.scores[side]["fidelity"] for s in subject]), img)
    _add(out, "fidelity_lift", summary.mean, img)
    _add(out, "fidelity_lift_ci_low", summary.ci_low, img)
    _add(out, "fidelity_lift_ci_high", summary.ci_high, img)
    if summary.wilcoxon_p is not None:
        _add(out, "fidelity_lift_wilcoxon_p", summary.wilcoxon_p, img)
    if summary.effect_dz is not None:
        _add(out, "fidelity_lift_effect_dz", summary.effect_dz, img)
    out.stats["fidelity_lift"] = summary.as_dict()
    for group in ("in_distribution", "out_of_distribution"):
        rows = [s for s in subject if s.group == group]
        for side in SIDES:
            if rows:
                value = np.mean([s.scores[side]["fidelity"] for s in rows])
                _add(out, f"fidelity_{group}_{side}", value, img)


def _vs_champion(out: Scored, subject: list[Sample], cfg: EvaluationConfig, img: str) -> None:
    """Adapter against the registry's current champion, same prompts and seeds."""
    if not subject or "champion" not in subject[0].renders:
        out.unavailable["champion"] = "no champion to compare with (none registered, or itself)"
        return
    diffs = {
        (s.prompt, s.seed): s.scores["adapter"]["fidelity"] - s.scores["champion"]["fidelity"]
        for s in subject
    }
    summary = paired_summary(diffs, cfg.stats.resamples, cfg.stats.confidence, cfg.stats.seed)
    _add(
        out, "fidelity_champion", np.mean([s.scores["champion"]["fidelity"] for s in subject]), img
    )
    _add(out, "fidelity_lift_vs_champion", summary.mean, img)
    _add(out, "fidelity_lift_vs_champion_ci_low", summary.ci_low, img)
    _add(out, "fidelity_lift_vs_champion_ci_high", summary.ci_high, img)
    out.stats["fidelity_lift_vs_champion"] = summary.as_dict()


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
    summary = paired_summary(sims, cfg.stats.resamples, cfg.stats.confidence, cfg.stats.seed)
    _add(out, "prior_preservation", summary.mean, img)
    _add(out, "prior_preservation_ci_low", summary.ci_low, img)
    _add(out, "prior_preservation_ci_high", summary.ci_high, img)
    out.stats["prior_preservation"] = summary.as_dict()


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
    summary = paired_summary(diffs, cfg.stats.resamples, cfg.stats.confidence, cfg.stats.seed)
    _add(out, "prompt_adherence_lift", summary.mean, backend)
    out.stats["prompt_adherence_lift"] = summary.as_dict()


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
