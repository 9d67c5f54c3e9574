"""The base a run uses and what it will need, known before a weight loads: the model folder,
the memory plan (`ltx-lora plan`) and the check that stops a preprocess that will not fit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ltx_lora.config import PipelineConfig
from stagekit.errors import UserError
from stagekit.workspace import Workspace

PLAN_CACHE = Path(".ltx-lora") / "plan-cache.json"  # the memory plan's traced figures


def configure_runtime(cfg: PipelineConfig) -> None:
    """One CPU thread for the tiny and demo models: their matrices are so small that thread
    hand-offs cost more than the arithmetic (measured 5-10x slower per step with 2 threads on 2
    busy cores)."""
    if _small(cfg.model.source):
        import torch

        torch.set_num_threads(1)


def _small(source: str) -> bool:
    """The tiny model or a packaged base (the demo): built here in seconds, sized in MB."""
    from ltx import bases

    return source == "tiny" or source in bases.names()


def model_path(ws: Workspace, cfg: PipelineConfig) -> Path:
    from diffusers.utils import logging as diffusers_logging

    from ltx.loading import ensure_model

    diffusers_logging.disable_progress_bar()  # per-component bars drown the stage's own bar
    return ensure_model(cfg.model, ws.models)


def plan(
    ws: Workspace,
    cfg: PipelineConfig,
    gpu: str | None = None,
    clip: str | None = None,
    attention: str = "fused",
    ram: str | None = None,
) -> dict[str, Any]:
    """`ltx-lora plan`: the training step's peak GPU memory and host RAM, by component, for the
    configured largest bucket (or `clip`, FRAMESxHEIGHTxWIDTH), without loading a weight; with
    a budget (`gpu`, else the detected card) the settings that fit, fastest first (with `ram`,
    only those whose host RAM fits it too)."""
    from trainer import plan as memory
    from trainer import plan_report as report
    from trainer import plan_sizes as sizes

    configs = sizes.model_configs(cfg.model, _model_folder(cfg))
    frames, height, width = _plan_clip(cfg, configs["transformer"], clip)
    audio = cfg.preprocess.with_audio and cfg.trainer.strategy != "text_to_video"
    latents = sizes.latents_for_clip(
        cfg.model, configs["transformer"], frames, height, width, cfg.curation.fps, audio
    )
    card = report.Card(f"a {gpu} card", report.parse_size(gpu)) if gpu else report.detected_card()
    setup = memory.make_setup(cfg.model, cfg.lora, cfg.trainer, configs, latents, "cuda", attention)
    cache = memory.PlanCache(ws.root / PLAN_CACHE)
    if cfg.trainer.blocks_to_swap == "auto":
        n = memory.resolve_swap(setup, card.total if card else None, cache)
        setup = replace(setup, blocks_to_swap=n)
    current = memory.make_plan(setup, cache)
    print(report.format_plan(current))
    summary: dict[str, Any] = {"gpu": current.gpu, "host": current.host}
    if card is not None:
        host = report.parse_size(ram) if ram else None
        fitting = memory.options(setup, card.total, cache, ram=host)
        print(report.format_options(setup, card, fitting, current))
        summary["fits"] = [report.changes(p, setup) for p in fitting]
    summary["preprocess"] = _plan_preprocess(ws, cfg, (frames, height, width), card)
    if card is None:
        print("no CUDA GPU here: add --gpu 24GB (your card's memory) to list what fits")
    return summary


def _plan_preprocess(
    ws: Workspace, cfg: PipelineConfig, clip: tuple[int, int, int], card: Any
) -> dict[str, Any]:
    """The preprocess part of `ltx-lora plan`: each phase, and with a card what fits it. The
    small built-in bases are sized by their folders (built in seconds), real ones by their
    configs alone."""
    from trainer import plan_preprocess as pre

    small = _small(cfg.model.source)
    shape = _preprocess_shape(cfg, model_path(ws, cfg) if small else _model_folder(cfg), clip)
    planned = pre.phases(shape)
    print(pre.format_preprocess(shape, planned, gpu=True))
    out: dict[str, Any] = {p.name: p.terms for p in planned}
    if card is not None:
        peak = pre.gpu_peak(planned)
        options = pre.fitting(shape, card.total)
        verdict = "fits" if peak <= card.total else "does NOT fit"
        print(f"on {card.label}: preprocessing {verdict} (planned {peak / 2**30:.1f} GiB)")
        if options:
            print("  settings that fit, fastest first: " + "; ".join(o for o, _ in options))
        else:
            print("  no text-encoder format or tiling fits: lower the clip size")
        out["fits"] = [o for o, _ in options]
    return out


def check_preprocess_fits(cfg: PipelineConfig, mpath: Path, manifest: Path) -> None:
    """Stop before a weight loads when preprocessing the manifest's largest clip cannot fit the
    detected card (no card: nothing to check)."""
    from trainer import plan_report as report
    from trainer.plan_preprocess import check_fits

    if (card := report.detected_card()) is not None:
        check_fits(_preprocess_shape(cfg, mpath, _manifest_clip(manifest)), card)


def _preprocess_shape(cfg: PipelineConfig, folder: Path | None, clip: tuple[int, int, int]) -> Any:
    from ltx.specs import spec_for_source
    from trainer.plan_preprocess import make_shape

    spec = spec_for_source(cfg.model.source)
    return make_shape(cfg.model, cfg.preprocess, folder, clip, cfg.curation.fps, spec.text_tokens)


def _manifest_clip(manifest: Path) -> tuple[int, int, int]:
    """(frames, height, width) of the manifest's largest bucket ([width, height, frames])."""
    from stagekit.files import read_jsonl

    buckets = [row["bucket"] for row in read_jsonl(manifest)] or [[32, 32, 1]]
    width, height, frames = max(buckets, key=lambda b: b[0] * b[1] * b[2])
    return frames, height, width


def _model_folder(cfg: PipelineConfig) -> Path | None:
    """A diffusers folder that is already there (its configs are exact); None otherwise: the
    plan never needs the weights."""
    if cfg.model.source != "diffusers" or not cfg.model.path:
        return None
    path = Path(cfg.model.path).expanduser()
    return path if path.is_dir() else None


def _plan_clip(cfg: PipelineConfig, transformer: dict[str, Any], clip: str | None) -> list[int]:
    """[frames, height, width] of `clip` ("121x512x768"), else of the largest configured bucket."""
    import math
    import re

    from curation.buckets import budget_buckets
    from ltx.buckets import PIPELINE_SIDE_MULTIPLE, BucketRules

    if clip is not None:
        if not (match := re.fullmatch(r"(\d+)x(\d+)x(\d+)", clip.strip())):
            raise UserError(f"--clip {clip!r}: give FRAMESxHEIGHTxWIDTH, e.g. 121x512x768")
        return [int(v) for v in match.groups()]
    temporal, spatial, _ = transformer.get("vae_scale_factors", (8, 32, 32))
    rules = BucketRules(math.lcm(spatial, PIPELINE_SIDE_MULTIPLE), temporal)
    c = cfg.curation
    buckets = c.buckets or budget_buckets(c.pixel_budget or 0, c.aspect_ratios, rules.spatial)
    width, height = max(buckets, key=lambda b: b[0] * b[1])
    return [rules.floor_frames(c.frames), height, width]
