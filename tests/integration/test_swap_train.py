"""`train` with trainer.blocks_to_swap on the tiny model, host and device both the CPU: the
same adapter and losses, bit for bit, as the run that keeps every block resident."""

from __future__ import annotations

from pathlib import Path

import pytest

import trainer.placement
import trainer.train
from tests.integration.conftest import TINY
from tests.integration.train_job import LINEAGE
from trainer.config import LoraConfig, TrainerConfig
from trainer.swap import BlockSwap
from trainer.train import train


def run(cache_dir: Path, out: Path, model_path: Path, **opts) -> dict:
    cfg = TrainerConfig(
        max_steps=4, log_every=1, warmup_steps=1, gradient_checkpointing=True, **opts
    )
    return train(
        cache_dir,
        out / "train",
        model_path,
        TINY,
        LoraConfig(rank=4, alpha=8),
        cfg,
        seed=0,
        trigger="zorblat",
        lineage=LINEAGE,
        resolved_config={},
        checkpoint_root=out / "ckpt",
    )


def test_swapped_run_trains_the_same_adapter(cache_dir, model_path, tmp_path, monkeypatch) -> None:
    swaps: list[BlockSwap | None] = []
    attach = trainer.placement.attach_swap

    def spy(*args, **kwargs) -> BlockSwap | None:
        swaps.append(attach(*args, **kwargs))
        return swaps[-1]

    resident = run(cache_dir, tmp_path / "resident", model_path)
    monkeypatch.setattr(trainer.placement, "attach_swap", spy)
    swapped = run(cache_dir, tmp_path / "swapped", model_path, blocks_to_swap=1)
    (swap,) = swaps
    assert swap is not None and swap.blocks == [1]
    events = {r.event for r in swap.record}
    assert {"forward", "backward"} <= events  # it ran, in forward and in recomputation
    files = ("adapter/adapter.safetensors", "adapter/comfyui.safetensors", "metrics.jsonl")
    for f in files:
        got = (tmp_path / "swapped/train" / f).read_bytes()
        assert got == (tmp_path / "resident/train" / f).read_bytes(), f
    assert swapped["adapter_sha256"] == resident["adapter_sha256"]
    # where the base lives is not part of the run's identity: the same run, already done
    again = run(cache_dir, tmp_path / "resident", model_path, blocks_to_swap=1)
    assert again["skipped"]


def test_too_many_blocks_is_a_clear_error(cache_dir, model_path, tmp_path) -> None:
    from stagekit.errors import ConfigError

    with pytest.raises(ConfigError, match="the transformer has 2 blocks: use 0 to 2"):
        run(cache_dir, tmp_path, model_path, blocks_to_swap=3)
