"""`ltx-lora evaluate`: paired base/adapter renders scored against reference clips, with
intervals, guardrails and a gate verdict."""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evaluation import motion
from evaluation.adapters import check_base_model, made_for
from evaluation.audio import AudioFeatures, add_audio_scores
from evaluation.conditioning import Conditioning, plan_conditioning, write_media
from evaluation.config import EvaluationConfig
from evaluation.denoise_layout import LABELS, conditioned_for
from evaluation.denoising import SIGMAS, cached_errors
from evaluation.faces import add_face_scores
from evaluation.features import FeatureStore
from evaluation.gate import judge
from evaluation.modes import Mode, adapter_mode
from evaluation.renders import RenderJob, ensure_renders, render_key
from evaluation.report import render_report
from evaluation.score import Sample, Scored, add_summary, score, summarise
from evaluation.suite import Suite, curated_clips, load_suite, reference_clips
from ltx.config import ModelConfig
from ltx.identity import model_hash
from stagekit.errors import UserError
from stagekit.files import atomic_dir, write_json, write_text
from stagekit.hashing import sha256_file, sha256_json
from stagekit.stage import load_record, save_record

EVAL_VERSION = 7  # bump when scores change meaning, so old records are not reused


def evaluate(
    adapter: Path,
    reference_dir: Path,
    out_dir: Path,
    model_path: Path,
    model_cfg: ModelConfig,
    cfg: EvaluationConfig,
    card: dict[str, Any],
    *,
    curated_dir: Path | None = None,
    suite_file: Path | None = None,
    cache_dir: Path | None = None,
    champion: Path | None = None,
) -> dict:
    """Render (cached), score, judge and report; skips when nothing it depends on changed.

    `curated_dir`: its validation clips join the references, its train clips feed copy
    detection. `suite_file`: the dataset's evaluation.yaml. `cache_dir`: renders + features
    (default: beside `out_dir`). `champion`: the registry's current champion adapter, rendered
    on the same prompts and seeds as a third side (`fidelity_lift_vs_champion`). The adapter's
    training mode (evaluation/modes.py) decides what every side is conditioned on."""
    cache_dir = cache_dir or out_dir.with_name(out_dir.name + "-cache")
    mode = adapter_mode(adapter, cfg.mode)
    suite = load_suite(cfg, card, suite_file)
    references = reference_clips(reference_dir, curated_dir)
    size = (cfg.width, cfg.height, cfg.frames)
    plan = plan_conditioning(
        mode, [p.text for p in suite.prompts], references, size, cfg.reference_control
    )
    training = curated_clips(curated_dir, "train")
    mhash = model_hash(model_path)
    ref_hashes = {p: sha256_file(p) for p in references}
    adapter_sha = sha256_file(adapter)
    sides = {"base": (None, None), "adapter": (adapter, adapter_sha)}
    if champion is not None and sha256_file(champion) != adapter_sha:  # not itself
        sides["champion"] = (champion, sha256_file(champion))
    cross = [path for path, _ in list(sides.values())[1:] if not made_for(path, mhash)]
    for path in cross if not cfg.allow_cross_version else []:
        check_base_model(path, mhash)
    for path in cross:  # allowed: said, and recorded in metrics.json
        print(f"evaluate: {path.name} was trained on another base; evaluating it on this one")
    fingerprint = sha256_json(
        {
            "v": EVAL_VERSION,
            "sides": {k: sha for k, (_, sha) in sides.items()},
            "model": mhash,
            "references": list(ref_hashes.values()),
            "training": [sha256_file(p) for p in training],
            "config": cfg.model_dump(),
            "suite": [(p.text, p.group) for p in suite.prompts] + [suite.seeds],
            "card": card,
            "mode": [mode.name, mode.reference_downscale_factor],
        }
    )
    if (record := load_record(out_dir, fingerprint)) is not None:
        return {**record, "skipped": True}

    @functools.cache
    def pipe() -> Any:  # loaded once, and only if a render or a denoising side is missing
        from ltx.loading import load_pipeline

        return load_pipeline(model_path, model_cfg.dtype, inference=True)  # as deployed

    samples = _render(suite, sides, mhash, pipe, cfg, cache_dir, plan)
    store = FeatureStore(cfg.features, cache_dir)
    if store.backend("image") is None:
        raise UserError(f"evaluation.features.image: {store.unavailable['image']}")
    scored = score(samples, references, training, store, cfg)
    _audio(
        scored,
        mode,
        samples,
        references,
        AudioFeatures(cache_dir, mhash, lambda: pipe().audio_vae),
        cfg,
    )
    add_face_scores(scored, samples, references, store, cfg)
    cache = (cache_dir, mhash)
    _denoising(scored, pipe, sides, ref_hashes, suite, cfg, cache, mode, model_cfg.ltx_version)
    verdict = judge(scored.scores, cfg.gate, scored.stats, mode.name)
    with atomic_dir(out_dir) as tmp:
        metrics = _metrics(scored, verdict, samples, references, suite, card, model_cfg, store)
        metrics["adapter_strength"] = cfg.adapter_strength
        metrics["cross_version"] = bool(cross)  # an adapter trained on another base
        metrics["mode"] = _mode_record(mode, plan)
        metrics["files"] = _copy_media(tmp, samples, references)
        metrics["files"]["conditions"] = _condition_media(tmp, samples, plan)
        write_json(tmp / "metrics.json", metrics)
        write_text(tmp / "report.html", render_report(metrics))
        summary = {
            "verdict": verdict.verdict,
            "scores": scored.scores,
            "reasons": verdict.reasons,
            "report": str(out_dir / "report.html"),
        }
        record = save_record(tmp, "evaluate", fingerprint, summary)
    return {**record, "skipped": False}


def _render(
    suite: Suite,
    sides: dict[str, tuple[Path | None, str | None]],
    mhash: str,
    load_pipe: Callable[[], Any],
    cfg: EvaluationConfig,
    cache_dir: Path,
    plan: dict[str, Conditioning],
) -> list[Sample]:
    """Every side of every prompt × seed, from the render cache where possible; in a
    conditioned mode every side of a prompt gets the same conditioning (`plan`)."""
    settings = cfg.render_settings()
    samples, jobs = [], []
    for prompt in suite.prompts:
        cond = plan.get(prompt.text)
        for seed in suite.seeds:
            renders = {}
            for side, (path, sha) in sides.items():
                key = render_key(mhash, sha, prompt.text, seed, settings, cond)
                job = RenderJob(prompt.text, seed, path, key, cond)
                jobs.append(job)
                renders[side] = job
            samples.append((prompt, seed, renders))

    paths = ensure_renders(jobs, cache_dir, load_pipe, settings)
    return [
        Sample(p.text, p.group, seed, {side: (j.key, paths[j.key]) for side, j in r.items()})
        for p, seed, r in samples
    ]


def _denoising(
    out: Scored,
    load_pipe: Callable[[], Any],
    sides: dict[str, tuple[Path | None, str | None]],
    references: dict[Path, str],
    suite: Suite,
    cfg: EvaluationConfig,
    cache: tuple[Path, str],
    mode: Mode,
    ltx_version: str,
) -> None:
    """Held-out denoising error of base and adapter on the reference clips (paired), with an
    interval over clips, then prompts x sigmas within a clip. `cache`: (folder, model hash).
    A conditioned mode conditions each clip on its own first frame, keyframes or control, as
    the trainer lays them out: an adapter is asked what it was trained to answer."""
    if not cfg.denoising:
        out.unavailable["denoising"] = "evaluation.denoising is false"
        return
    first_frame = mode.name == "image_to_video"  # the clip's own first frame, clean
    size = (cfg.width, cfg.height, cfg.frames)
    conditioned = None
    if mode.conditioned and not first_frame:
        control = cfg.reference_control
        conditioned = conditioned_for(mode, size, control, ltx_version, references)
    pair = {side: sides[side] for side in ("base", "adapter")}
    prompts = [p.text for p in suite.group("in_distribution")]
    errors = cached_errors(
        *cache, pair, references, prompts, size, cfg.fps, load_pipe, cfg.adapter_strength,
        first_frame, conditioned,
    )  # fmt: skip
    if errors is None:
        sheet = " and a reference sheet" if mode.name == "multi_reference" else ""
        out.unavailable["denoising"] = f"no reference clip has {cfg.frames} frames{sheet}"
        return
    label = f"denoising@sigmas={','.join(f'{s:g}' for s in SIGMAS)}"
    label += ",first-frame-clean" if first_frame else ""
    label += f",{LABELS[mode.name]}" if conditioned is not None else ""
    diffs = {k: errors["adapter"][k] - errors["base"][k] for k in errors["base"]}
    # the gate's bound is the dual test's null: "confidently worse" and p < alpha/2 agree
    summary = summarise(diffs, cfg, cfg.gate.max_denoise_error_change_ci_low or 0.0)
    for side in ("base", "adapter"):
        out.scores[f"denoise_error_{side}"] = float(np.mean(list(errors[side].values())))
        out.labels[f"denoise_error_{side}"] = label
    add_summary(out, "denoise_error_change", summary, label)


def _audio(
    out: Scored,
    mode: Mode,
    samples: list[Sample],
    references: list[Path],
    feats: AudioFeatures,
    cfg: EvaluationConfig,
) -> None:
    """Audio scores for modes trained on audio; said unavailable for the others."""
    if not mode.has_audio:
        out.unavailable["audio"] = f"mode {mode.name} is not trained on audio"
        return
    add_audio_scores(out, samples, references, feats, cfg)


def _mode_record(mode: Mode, plan: dict[str, Conditioning]) -> dict[str, Any]:
    """metrics.json `mode`: what the adapter was evaluated as, where that was read, and which
    held-out clip conditioned each prompt."""
    return {
        "name": mode.name,
        "source": mode.source,
        "reference_downscale_factor": mode.reference_downscale_factor,
        "conditioning": {p: {"clip": c.source.name, "kind": c.kind} for p, c in plan.items()},
    }


def _condition_media(
    out: Path, samples: list[Sample], plan: dict[str, Conditioning]
) -> list[list[str]]:
    """Per sample row, the conditioning files the report shows beside its renders ([] in a
    text-only mode); written once per prompt."""
    written: dict[str, list[str]] = {}
    for i, prompt in enumerate(dict.fromkeys(s.prompt for s in samples)):
        if prompt in plan:
            files = write_media(out / "samples", f"condition-{i:02d}", plan[prompt])
            written[prompt] = [f"samples/{f}" for f in files]
    return [written.get(s.prompt, []) for s in samples]


def _metrics(
    scored: Scored,
    verdict: Any,
    samples: list[Sample],
    references: list[Path],
    suite: Suite,
    card: dict[str, Any],
    model_cfg: ModelConfig,
    store: FeatureStore,
) -> dict[str, Any]:
    """metrics.json: `verdict`, `scores`, `rule` (the registry's contract) and the detail."""
    return {
        "verdict": verdict.verdict,
        "rule": verdict.rule,
        "reasons": verdict.reasons,
        "checks": verdict.checks,
        "evidence": verdict.evidence,
        "scores": scored.scores,
        "score_backends": scored.labels,
        "unavailable": {**scored.unavailable},
        "stats": scored.stats,
        "adapter_name": f"{card['client']}.{card['adapter']}",
        "base_model": model_cfg.name,
        "ltx_version": model_cfg.ltx_version,
        "backends": {k: store.label(k) for k in ("image", "text_image", "video") if store.label(k)}
        | {"motion": motion.backend_label()},
        "suite_source": suite.source,
        "seeds": suite.seeds,
        "n_references": len(references),
        "n_samples": len(samples),
        "per_sample": [
            {"prompt": s.prompt, "group": s.group, "seed": s.seed, **s.scores} for s in samples
        ],
    }


def _copy_media(out: Path, samples: list[Sample], references: list[Path]) -> dict[str, Any]:
    """Renders and references into the output folder: the report links them relatively."""
    files: dict[str, Any] = {"samples": [], "references": []}
    for i, s in enumerate(samples):
        row = {}
        for side in s.renders:
            rel = f"samples/{i:03d}-{side}.mp4"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s.renders[side][1], out / rel)
            row[side] = rel
        files["samples"].append(row)
    for i, ref in enumerate(references):
        # under samples/ too: the registry logs samples/ with the report, so the links hold there
        rel = f"samples/reference-{i:02d}-{ref.name}"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ref, out / rel)
        files["references"].append(rel)
    return files
