"""An out-of-memory during a step despite the plan (issue 16, "Bad input"): one line with the
plan's peak and the measured one naming the knob; the last checkpoint is kept, and a re-run
with the knob turned resumes from it. A GPU OOM cannot happen here: the step raises
`torch.OutOfMemoryError` as the caching allocator would, and the same code path runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from stagekit.errors import UserError
from tests.integration import train_job
from trainer import train as train_module
from trainer.config import LoraConfig
from trainer.strategies import get_strategy

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class _RunsOutAt:
    """The configured strategy, whose loss raises an OOM at its `at`-th call."""

    def __init__(self, strategy, at: int) -> None:
        self.strategy, self.at, self.calls = strategy, at, 0

    def __getattr__(self, name: str):
        return getattr(self.strategy, name)

    def loss(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise OOM("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.strategy.loss(*args, **kwargs)


def test_oom_names_the_plan_the_peak_and_the_knob_and_a_rerun_resumes(
    cache_dir: Path, model_path: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    cfg = train_job.job_config(8).model_copy(
        update={"grad_accum": 1, "checkpoint_every": 2, "gradient_checkpointing": True}
    )
    args = dict(
        seed=0,
        trigger="zorblat",
        lineage=train_job.LINEAGE,
        resolved_config={},
        checkpoint_root=tmp_path / "ckpt",
    )
    tiny = train_job.ModelConfig(name="ltx2-tiny", source="tiny")
    lora = LoraConfig(rank=4, alpha=4)
    out = tmp_path / "train"
    monkeypatch.setattr(
        train_module, "get_strategy", lambda name: _RunsOutAt(get_strategy(name), at=5)
    )
    with pytest.raises(UserError) as failed:
        train_module.train(cache_dir, out, model_path, tiny, lora, cfg, **args)
    message = str(failed.value)
    assert "\n" not in message
    assert "ran out of memory at step 5 despite the memory plan" in message
    assert re.search(r"planned peak \d+\.\d GiB host RAM \(CPU run\)", message), message
    assert re.search(r"measured peak \d+\.\d GiB resident", message), message
    assert "step-000004" in message and "is kept" in message
    assert "(the run resumes from its checkpoint)" in message
    knob = re.search(r"set trainer\.blocks_to_swap=(\d+)", message)
    assert knob, message
    run = next((tmp_path / "ckpt").iterdir())
    kept = sorted(p.name for p in run.glob("step-*"))
    assert kept == ["step-000002", "step-000004"]
    assert (run / "step-000004" / "tensors.safetensors").stat().st_size > 0
    assert not out.exists()

    monkeypatch.undo()
    capsys.readouterr()
    turned = cfg.model_copy(update={"blocks_to_swap": int(knob[1])})
    summary = train_module.train(cache_dir, out, model_path, tiny, lora, turned, **args)
    assert not summary["skipped"] and summary["steps"] == 8
    assert "resuming from step 4" in capsys.readouterr().out
