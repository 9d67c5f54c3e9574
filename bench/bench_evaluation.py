"""Evaluation cost: a cached rerun (renders and features on disk, fresh output folder) against
the first run, and feature extraction per frame on CPU (EfficientNet-Lite0, DIS flow) against
the old colour-histogram score, all in one run.

The first run renders the tiny model's base and adapter clips for the default suite
(7 prompts × 2 seeds × 2 sides, 64×64×17) and extracts features; the rerun must not render or
extract anything (target ≥ 10× faster).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from bench.common import Result, best_of

FRAMES = 64  # frames per feature-cost measurement


def _setup(root: Path) -> dict:
    """Sample dataset, curated; tiny model; a random nonzero adapter with the trainer's header."""
    from safetensors.torch import save_file

    from curation.card import load_card
    from curation.config import CurationConfig
    from curation.curate import curate
    from curation.sample import generate_sample_dataset
    from ltx.buckets import bucket_rules
    from ltx.config import ModelConfig
    from ltx.identity import model_hash
    from ltx.loading import ensure_model, load_pipeline
    from ltx.lora import adapter_state_dict, add_lora
    from ltx_lora.config import PACKAGED_CONFIGS
    from stagekit.workspace import Workspace

    ws = Workspace(root)
    generate_sample_dataset(ws.dataset("sample"))
    model_cfg = ModelConfig(name="ltx2-tiny", source="tiny", seed=0)
    mpath = ensure_model(model_cfg, ws.models)
    card = load_card(ws.card("sample"))
    cur = CurationConfig.model_validate(
        yaml.safe_load((PACKAGED_CONFIGS / "curation" / "default.yaml").read_text())
    )
    curate(ws.raw("sample"), ws.curated("sample"), card, cur, bucket_rules(mpath))
    pipe = load_pipeline(mpath)
    add_lora(pipe.transformer, 4, 4, 0.0, "video_attention")
    for name, p in pipe.transformer.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.5
    adapter = root / "adapter.safetensors"
    state = {k: v.contiguous() for k, v in adapter_state_dict(pipe.transformer).items()}
    save_file(state, adapter, metadata={"base_model_hash": model_hash(mpath)})
    return {"ws": ws, "model_cfg": model_cfg, "mpath": mpath, "card": card, "adapter": adapter}


def _evaluate_twice(env: dict, root: Path) -> tuple[float, float]:
    from evaluation.config import EvaluationConfig
    from evaluation.evaluate import evaluate
    from ltx_lora.config import PACKAGED_CONFIGS

    cfg = EvaluationConfig.model_validate(
        yaml.safe_load((PACKAGED_CONFIGS / "evaluation" / "default.yaml").read_text())
    )
    ws = env["ws"]
    times = []
    for out in ("first", "rerun"):  # same cache, fresh output folder each time
        start = time.perf_counter()
        evaluate(
            env["adapter"],
            ws.reference("sample"),
            root / out,
            env["mpath"],
            env["model_cfg"],
            cfg,
            env["card"].model_dump(),
            curated_dir=ws.curated("sample"),
            cache_dir=root / "cache",
        )
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def _feature_costs() -> list[Result]:
    """Seconds per frame of each extractor on 64×64 frames (the tiny renders' size)."""
    from evaluation.backends import EfficientNetBackend
    from evaluation.motion import flow_fields

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (FRAMES, 64, 64, 3), dtype=np.uint8)

    def histogram() -> None:  # the previous score: joint 8³ RGB histogram per frame
        for f in frames:
            cells = f.reshape(-1, 3).astype(np.int64) * 8 // 256
            np.bincount((cells[:, 0] * 8 + cells[:, 1]) * 8 + cells[:, 2], minlength=512)

    effnet = EfficientNetBackend()
    hist_s = best_of(histogram) / FRAMES
    effnet_s = best_of(lambda: effnet.embed_frames(frames)) / FRAMES
    flow_s = best_of(lambda: flow_fields(frames)) / (FRAMES - 1)
    return [
        Result(
            "evaluate: EfficientNet-Lite0 /frame",
            "RGB histogram /frame",
            hist_s,
            effnet_s,
            note=f"{effnet_s * 1e3:.1f} ms/frame at 224² on {torch.get_num_threads()} threads",
        ),
        Result(
            "evaluate: DIS optical flow /pair",
            "RGB histogram /frame",
            hist_s,
            flow_s,
            note=f"{flow_s * 1e3:.2f} ms per 64×64 frame pair",
        ),
    ]


def run() -> list[Result]:
    root = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    try:
        torch.set_num_threads(1)  # as `ltx-lora` runs the tiny model
        env = _setup(root)
        first, rerun = _evaluate_twice(env, root)
        results = [
            Result(
                "evaluate: cached rerun",
                "first run (render+features)",
                first,
                rerun,
                target=10.0,
                note="28 renders 64×64×17; fresh output folder",
            )
        ]
        return results + _feature_costs()
    finally:
        shutil.rmtree(root, ignore_errors=True)
