"""`ltx-lora evaluate`: paired base/adapter renders scored against the reference clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evaluation.config import EvaluationConfig
from evaluation.metrics import pooled_histogram, reference_similarity
from evaluation.report import render_report, still_png
from ltx.config import ModelConfig
from ltx.identity import model_hash
from ltx.loading import load_pipeline
from ltx.sampling import Clip, generate, read_clip, write_clip
from stagekit.errors import UserError
from stagekit.files import atomic_dir, write_json, write_text
from stagekit.hashing import sha256_file, sha256_json, sha256_tree
from stagekit.stage import load_record, save_record

BACKEND = "rgb-histogram-8"
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi"}


def evaluate(
    adapter: Path,
    reference_dir: Path,
    out_dir: Path,
    model_path: Path,
    model_cfg: ModelConfig,
    cfg: EvaluationConfig,
    card: dict[str, Any],
) -> dict:
    """Render, score and judge; skips when adapter, references, model and config are unchanged."""
    references = _reference_clips(reference_dir)
    fingerprint = sha256_json(
        {
            "adapter": sha256_file(adapter),
            "references": sha256_tree(reference_dir),
            "model": model_hash(model_path),
            "config": cfg.model_dump(),
            "card": card,
            "backend": BACKEND,
        }
    )
    if (record := load_record(out_dir, fingerprint)) is not None:
        return {**record, "skipped": True}

    prompts = [t.format(**card) for t in cfg.prompts]
    pipe = load_pipeline(model_path, model_cfg.dtype)
    render = {
        "width": cfg.width,
        "height": cfg.height,
        "frames": cfg.frames,
        "fps": cfg.fps,
        "steps": cfg.steps,
        "guidance_scale": cfg.guidance_scale,
    }
    with tqdm(total=2, desc="evaluate: rendering", unit="side") as bar:
        base = generate(pipe, prompts, cfg.seeds, **render)
        bar.update()
        tuned = generate(pipe, prompts, cfg.seeds, adapter=adapter, **render)
        bar.update()

    ref_hist = pooled_histogram([read_clip(p).video for p in references])
    pairs = [(p, s) for p in prompts for s in cfg.seeds]
    with atomic_dir(out_dir) as tmp:
        samples = [
            _sample(tmp, i, prompt, seed, b, t, ref_hist)
            for i, ((prompt, seed), b, t) in enumerate(zip(pairs, base, tuned, strict=True))
        ]
        metrics = _metrics(samples, cfg, card, model_cfg, len(references))
        write_json(tmp / "metrics.json", metrics)
        write_text(tmp / "report.html", render_report(metrics, samples))
        summary = {
            "verdict": metrics["verdict"],
            "scores": metrics["scores"],
            "report": str(out_dir / "report.html"),
        }
        record = save_record(tmp, "evaluate", fingerprint, summary)
    return {**record, "skipped": False}


def _reference_clips(reference_dir: Path) -> list[Path]:
    clips = sorted(p for p in reference_dir.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise UserError(
            f"no reference clips in {reference_dir}: put a few held-out clips of "
            "the subject there (they are what the adapter is scored against)"
        )
    return clips


def _sample(
    out: Path, i: int, prompt: str, seed: int, base: Clip, tuned: Clip, ref_hist: np.ndarray
) -> dict[str, Any]:
    """Write both renders; return their scores and stills."""
    row: dict[str, Any] = {"prompt": prompt, "seed": seed}
    for side, clip in (("base", base), ("adapter", tuned)):
        rel = f"samples/{i:03d}-{side}.mp4"
        write_clip(out / rel, clip)
        row[side] = {
            "path": rel,
            "score": reference_similarity(clip.video, ref_hist),
            "still": still_png(clip.video),
        }
    return row


def _metrics(
    samples: list[dict[str, Any]],
    cfg: EvaluationConfig,
    card: dict[str, Any],
    model_cfg: ModelConfig,
    n_refs: int,
) -> dict[str, Any]:
    """Mean scores per side and the paired difference; pass when it reaches `min_improvement`."""
    base = float(np.mean([s["base"]["score"] for s in samples]))
    tuned = float(np.mean([s["adapter"]["score"] for s in samples]))
    delta = float(np.mean([s["adapter"]["score"] - s["base"]["score"] for s in samples]))
    return {
        "adapter_name": f"{card['client']}.{card['adapter']}",
        "base_model": model_cfg.name,
        "backend": BACKEND,
        "n_references": n_refs,
        "n_samples": len(samples),
        "scores": {
            "reference_similarity_base": base,
            "reference_similarity_adapter": tuned,
            "reference_similarity_delta": delta,
        },
        "per_sample": [
            {
                "prompt": s["prompt"],
                "seed": s["seed"],
                "base": s["base"]["score"],
                "adapter": s["adapter"]["score"],
            }
            for s in samples
        ],
        "verdict": "pass" if delta >= cfg.min_improvement else "fail",
        "rule": f"pass when mean paired reference-similarity gain ≥ {cfg.min_improvement}",
    }
