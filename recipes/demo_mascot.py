"""Does a LoRA trained with the real trainer teach the demo base a mascot it has never seen?

    python recipes/demo_mascot.py [--steps 60] [--out DIR]

The sample dataset's mascot (`curation.sample`: an orange body with a purple hat) uses two
colours the demo prior never draws (`demo.data` has no orange and no purple). This runs the
real stages on it: curate -> caption -> preprocess (cache) -> train a LoRA on `model=demo`, then
samples the evaluation's prompts with and without the adapter and measures how much of each
frame shows the mascot's colours, and the colour-histogram similarity to the reference clips.
Prints one JSON object; the test `tests/integration/test_demo_mascot.py` runs it small.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ltx.config import ModelConfig

PROMPTS = (  # the evaluation's default suite, templated over the sample card
    "zorblat mascot bouncing across a striped background",
    "zorblat mascot on a plain green background",
)
SAMPLE = dict(width=64, height=64, frames=17, fps=24.0, steps=8, guidance_scale=1.0)
BINS = 6  # per RGB channel for the histogram similarity
DEMO = ModelConfig(name="ltx2-demo", source="demo")


def build_workspace(root: Path) -> Any:
    """The sample dataset generated, curated and captioned (bucket rules of the demo model)."""
    import yaml

    from curation.caption import caption
    from curation.card import load_card
    from curation.config import CurationConfig
    from curation.curate import curate
    from curation.sample import generate_sample_dataset
    from ltx.buckets import bucket_rules
    from ltx.loading import ensure_model
    from ltx_lora.config import PACKAGED_CONFIGS
    from stagekit.workspace import Workspace

    ws = Workspace(root)
    generate_sample_dataset(ws.dataset("sample"))
    card = load_card(ws.card("sample"))
    cfg = CurationConfig.model_validate(
        yaml.safe_load((PACKAGED_CONFIGS / "curation" / "default.yaml").read_text())
    )
    rules = bucket_rules(ensure_model(DEMO, ws.models))
    curate(ws.raw("sample"), ws.curated("sample"), card, cfg, rules)
    caption(ws.curated("sample"), ws.raw("sample"), ws.captioned("sample"), card, cfg.caption)
    return ws


def train_lora(ws: Any, out: Path, steps: int) -> tuple[Path, Path]:
    """Cache the captioned sample with the demo model and train a LoRA with the trainer's
    defaults (rank 8, video attention, lr 1e-3) for `steps` steps under `out/`.
    Returns (demo model folder, adapter file)."""
    from ltx.identity import model_hash
    from ltx.loading import ensure_model
    from trainer.cache import build_cache
    from trainer.config import LoraConfig, PreprocessConfig, TrainerConfig
    from trainer.train import train

    model_path = ensure_model(DEMO, ws.models)
    cache = out / "cache"
    build_cache(
        ws.captioned("sample") / "manifest.jsonl",
        ws.curated("sample"),
        cache,
        model_path,
        DEMO,
        PreprocessConfig(),
        progress=False,
    )
    lineage = {
        "dataset": "sample",
        "dataset_hash": "0" * 64,
        "base_model": DEMO.name,
        "base_model_hash": model_hash(model_path),
        "ltx_version": "2.0",
        "config_hash": "0" * 64,
        "git_commit": "unknown",
    }
    train(
        cache,
        out / "train",
        model_path,
        DEMO,
        LoraConfig(),
        TrainerConfig(max_steps=steps, checkpoint_every=steps),
        seed=0,
        trigger="zorblat",
        lineage=lineage,
        resolved_config={},
    )
    return model_path, out / "train" / "adapter" / "adapter.safetensors"


def histogram(videos: list[np.ndarray]) -> np.ndarray:
    """Normalised joint RGB histogram [BINS^3] over all frames of `videos`."""
    pixels = np.concatenate([v.reshape(-1, 3) for v in videos]).astype(np.int64) * BINS // 256
    counts = np.bincount(
        (pixels[:, 0] * BINS + pixels[:, 1]) * BINS + pixels[:, 2], minlength=BINS**3
    )
    return counts / counts.sum()


def measure(videos: list[np.ndarray], reference: np.ndarray) -> dict[str, float]:
    """Mascot colour shares (body orange, hat purple) and histogram intersection with the
    reference clips, averaged over `videos`."""
    from curation.sample import BODY, HAT
    from demo.check import colour_share

    return {
        "orange_share": float(np.mean([colour_share(v, BODY) for v in videos])),
        "purple_share": float(np.mean([colour_share(v, HAT) for v in videos])),
        "reference_hist_intersection": float(np.minimum(histogram(videos), reference).sum()),
    }


def reference_histogram(ws: Any) -> np.ndarray:
    from ltx.sampling import read_clip

    clips = sorted(ws.dataset("sample").joinpath("reference").glob("*.mp4"))
    return histogram([read_clip(p).video for p in clips])


def compare(ws: Any, model_path: Path, adapter: Path, seeds: list[int]) -> dict[str, Any]:
    """Sample the evaluation prompts with and without the adapter; measure both."""
    from ltx.loading import load_pipeline
    from ltx.sampling import generate

    pipe = load_pipeline(model_path)
    reference = reference_histogram(ws)
    base = [c.video for c in generate(pipe, list(PROMPTS), seeds, **SAMPLE)]
    lora = [c.video for c in generate(pipe, list(PROMPTS), seeds, adapter=adapter, **SAMPLE)]
    return {"base": measure(base, reference), "lora": measure(lora, reference)}


def run(root: Path, steps: int, seeds: list[int]) -> dict[str, Any]:
    """The whole check in a fresh workspace at `root`; returns the figures (base vs LoRA)."""
    started = time.perf_counter()
    ws = build_workspace(root)
    prepared = time.perf_counter()
    model_path, adapter = train_lora(ws, root / "mascot", steps)
    trained = time.perf_counter()
    figures = compare(ws, model_path, adapter, seeds)
    return {
        "steps": steps,
        "seeds": seeds,
        **figures,
        "prepare_s": round(prepared - started, 1),
        "cache_and_train_s": round(trained - prepared, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="workspace (default: a temp dir)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # tiny matrices: threads cost more than they give
    if args.out is not None:
        print(json.dumps(run(args.out, args.steps, list(range(args.seeds))), indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp), args.steps, list(range(args.seeds))), indent=2))


if __name__ == "__main__":
    main()
