"""A training run in its own process, so a test can SIGKILL it mid-way.

usage: python train_job.py CACHE OUT CHECKPOINTS MODEL MAX_STEPS [BATCH_SIZE [LORA_DROPOUT]]
(under `torchrun --nproc_per_node N` it is one of N data-parallel processes)
"""

from __future__ import annotations

import sys
from pathlib import Path

from ltx.config import ModelConfig
from trainer.config import LoraConfig, TrainerConfig
from trainer.train import train

LINEAGE = {
    "dataset": "sample",
    "dataset_hash": "d" * 64,
    "base_model": "ltx2-tiny",
    "base_model_hash": "b" * 64,
    "ltx_version": "2.0",
    "config_hash": "c" * 64,
    "git_commit": "unknown",
}


def job_config(max_steps: int, batch_size: int = 1) -> TrainerConfig:
    # dropout and EMA on, so their RNG and state must survive the restart too
    return TrainerConfig(
        max_steps=max_steps,
        log_every=1,
        warmup_steps=2,
        checkpoint_every=4,
        keep_checkpoints=2,
        ema_decay=0.9,
        grad_accum=2,
        batch_size=batch_size,
    )


def main(
    cache: str,
    out: str,
    checkpoints: str,
    model: str,
    max_steps: str,
    batch_size: str = "1",
    dropout: str = "0.1",
) -> None:
    import torch

    torch.set_num_threads(1)
    train(
        Path(cache),
        Path(out),
        Path(model),
        ModelConfig(name="ltx2-tiny", source="tiny"),
        LoraConfig(rank=4, alpha=4, dropout=float(dropout)),
        job_config(int(max_steps), int(batch_size)),
        seed=0,
        trigger="zorblat",
        lineage=LINEAGE,
        resolved_config={},
        checkpoint_root=Path(checkpoints),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
