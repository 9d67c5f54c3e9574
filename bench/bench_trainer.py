"""Trainer overhead: `trainer.train.train`'s step time against a bare loop on the same model.

Both run the tiny LTX-2 with a LoRA on the same cached batches (2448 video tokens each: above
the 1k-token floor where attention, not Python, dominates), same strategy loss, AdamW and
clipping. The bare loop has no checkpoints, logging, EMA, loss guard or data order.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from bench.common import Result
from ltx.config import ModelConfig
from ltx.identity import model_hash
from ltx.loading import ensure_model, load_components
from ltx.lora import add_lora
from stagekit.files import read_json, write_json
from stagekit.hashing import sha256_file
from trainer.cache import CACHE_FORMAT, INDEX
from trainer.config import LoraConfig, TrainerConfig
from trainer.data import BatchOrder, load_split
from trainer.strategies import get_strategy
from trainer.train import train

TINY = ModelConfig(name="ltx2-tiny", source="tiny")
STEPS = int(os.environ.get("BENCH_TRAIN_STEPS", "20"))
ROUNDS = 2
LATENT = (8, 17, 12, 12)  # [C, F', H', W']: 33 frames of 96x96 through the tiny VAE
AUDIO = (2, 34, 4)  # 33 frames at 24 fps → 34 audio latents


def synthetic_cache(cache: Path, model_path: Path, clips: int = 4) -> None:
    """Cache shards in the real format, filled with seeded random latents and text features."""
    g = torch.Generator().manual_seed(0)
    entries = {}
    for i in range(clips):
        name = f"clip{i}.safetensors"
        tensors = {
            "video": torch.randn(LATENT, generator=g),
            "audio": torch.randn(AUDIO, generator=g),
            "text.prompt_features": torch.randn(1, 128, 32, generator=g),
            "text.prompt_attention_mask": torch.ones(1, 128, dtype=torch.int64),
        }
        cache.mkdir(parents=True, exist_ok=True)
        save_file(tensors, cache / name)
        entries[f"clip{i}"] = {
            "file": name,
            "sha256": sha256_file(cache / name),
            "fingerprint": "bench",
            "split": "train",
            "bucket": [96, 96, 33],
            "caption": "bench",
            "fps": 24.0,
        }
    # the trainer refuses a cache made for another model: this one is "made" for model_path
    identity = {"model": model_hash(model_path)}
    write_json(cache / INDEX, {"format": CACHE_FORMAT, "identity": identity, "entries": entries})


def bare_loop(cache: Path, model_path: Path, cfg: TrainerConfig, lora: LoraConfig) -> float:
    """Seconds per step of forward + backward + clip + AdamW, nothing else."""
    comps = load_components(model_path, ["transformer", "connectors", "scheduler"])
    transformer = comps["transformer"].requires_grad_(False).train()
    add_lora(transformer, lora.rank, lora.alpha, lora.dropout, lora.targets)
    params = [p for p in transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    denoiser = {"transformer": transformer, "connectors": comps["connectors"]}
    batches = [b for _, _, b in _take(BatchOrder(load_split(cache, "train"), 1, 0), STEPS)]
    strategy, g = get_strategy(cfg.strategy), torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for batch in batches:
        loss = strategy.loss(denoiser, comps["scheduler"], batch, cfg, g)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / STEPS


def _take(order: BatchOrder, n: int):
    stream = order.stream()
    return [next(stream) for _ in range(n)]


def run() -> list[Result]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_path = ensure_model(TINY, root / "models")
        synthetic_cache(root / "cache", model_path)
        cfg = TrainerConfig(max_steps=STEPS, log_every=5, checkpoint_every=10)
        lora = LoraConfig()
        bare, ours = [], []
        for i in range(ROUNDS):  # interleaved, best of each: load drifts on shared machines
            bare.append(bare_loop(root / "cache", model_path, cfg, lora))
            ours.append(_train(root, f"train{i}", model_path, lora, cfg))
        final = min(ours, key=lambda f: f["step_s"])
        plain = final["step_s"]
        variants = {
            "gradient checkpointing": (
                lora,
                cfg.model_copy(update={"gradient_checkpointing": True}),
            ),
            "DoRA adapter": (lora.model_copy(update={"kind": "dora"}), cfg),
            "LoKr adapter": (lora.model_copy(update={"kind": "lokr"}), cfg),
        }
        options = [
            (name, _train(root, name.replace(" ", "-"), model_path, v_lora, v_cfg)["step_s"])
            for name, (v_lora, v_cfg) in variants.items()
        ]
    note = f"data wait {100 * final['data_wait_fraction']:.1f}% of step (target < 5%)"
    return [
        Result(
            "trainer step (2448 tokens)",
            "bare fwd+bwd+AdamW loop",
            min(bare),
            final["step_s"],
            target=1 / 1.10,
            note=note,
        ),
        *[
            Result(f"train step, {name}", "train step, plain LoRA", plain, step_s)
            for name, step_s in options
        ],
    ]


LINEAGE = {
    "dataset": "bench",
    "dataset_hash": "",
    "base_model": "tiny",
    "base_model_hash": "",
    "ltx_version": "2.0",
    "config_hash": "",
    "git_commit": "",
}


def _train(root: Path, name: str, model_path: Path, lora: LoraConfig, cfg: TrainerConfig) -> dict:
    """`train()` once into root/name; its train.json `final` block (step_s, data wait)."""
    train(
        root / "cache",
        root / name,
        model_path,
        TINY,
        lora,
        cfg,
        seed=0,
        trigger="bench",
        lineage=LINEAGE,
        resolved_config={},
        checkpoint_root=root / f"ckpt-{name}",
    )
    return read_json(root / name / "train.json")["final"]
