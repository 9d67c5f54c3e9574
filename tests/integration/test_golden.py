"""Golden-loss regression: the tiny model, 8 steps, losses equal stored values at 1e-5.

A change to the objective, the σ sampling, the data order, the LoRA init or the latents shows
up here first. If a change is intended, regenerate with `GOLDEN_UPDATE=1 pytest <this file>`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.conftest import TINY
from tests.integration.train_job import LINEAGE
from trainer.config import LoraConfig, TrainerConfig
from trainer.train import train

GOLDEN = Path(__file__).with_name("golden_losses.json")


def test_losses_match_golden(cache_dir, model_path, tmp_path) -> None:
    cfg = TrainerConfig(max_steps=8, log_every=1, warmup_steps=2, lr=1e-3)
    train(
        cache_dir,
        tmp_path / "train",
        model_path,
        TINY,
        LoraConfig(rank=4, alpha=4),
        cfg,
        seed=0,
        trigger="zorblat",
        lineage=LINEAGE,
        resolved_config={},
        checkpoint_root=tmp_path / "ckpt",
    )
    rows = [json.loads(r) for r in (tmp_path / "train/metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows]
    if os.environ.get("GOLDEN_UPDATE"):
        GOLDEN.write_text(json.dumps({"losses": losses}, indent=2) + "\n")
    golden = json.loads(GOLDEN.read_text())["losses"]
    assert len(losses) == 8
    assert losses == pytest.approx(golden, rel=1e-5, abs=1e-5)
