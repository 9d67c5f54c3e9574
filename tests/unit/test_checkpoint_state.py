"""The pickle-free training state: every optimizer the trainer offers, the LR schedule, the RNGs
and the loop's progress survive safetensors + JSON exactly, so training continued from a saved
state matches training that never stopped, bit for bit."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import checkpoint
from trainer.checkpoint_state import decode, encode, rng_state, set_rng_state
from trainer.config import TrainerConfig
from trainer.loop import Progress, checkpoint_state, lr_factor, restore


def adamw(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)


def adamw8bit(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    bnb = pytest.importorskip("bitsandbytes")
    return bnb.optim.AdamW8bit(params, lr=1e-2, weight_decay=0.01)


class Trainee:
    """A two-parameter model with the loop's companions: optimizer, LR schedule, noise
    generator, EMA. The big weight (8192 values) gets 8-bit state under AdamW8bit, the small
    one 32-bit state: both kinds are in the checkpoint."""

    def __init__(self, make_optimizer: Callable[..., torch.optim.Optimizer]) -> None:
        torch.manual_seed(0)
        self.params = {
            "big": torch.nn.Parameter(torch.randn(64, 128)),
            "small": torch.nn.Parameter(torch.randn(16)),
        }
        self.optimizer = make_optimizer(list(self.params.values()))
        cfg = TrainerConfig(max_steps=20, warmup_steps=3)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(cfg))
        self.generator = torch.Generator().manual_seed(1)
        self.ema = {n: p.detach().clone() for n, p in self.params.items()}
        self.progress = Progress()

    def steps(self, n: int) -> None:
        for _ in range(n):
            noise = torch.randn(16, generator=self.generator)
            dropped = torch.nn.functional.dropout(self.params["big"], 0.1)  # global RNG
            loss = dropped.square().mean() + (self.params["small"] - noise).square().sum()
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for name, p in self.params.items():
                    self.ema[name].lerp_(p, 0.1)
            self.progress.step += 1
            self.progress.record(loss.item(), {"video": loss.item()})

    def state(self) -> dict:
        return checkpoint_state(
            self.progress, self.params, self.optimizer, self.schedule, self.generator, self.ema
        )

    def restore(self, saved: dict) -> None:
        self.progress = restore(
            saved, self.params, self.optimizer, self.schedule, self.generator, self.ema
        )


@pytest.mark.parametrize("make_optimizer", [adamw, adamw8bit], ids=["adamw", "adamw8bit"])
def test_training_continued_from_a_checkpoint_matches_training_that_never_stopped(
    make_optimizer: Callable[..., torch.optim.Optimizer], tmp_path: Path
) -> None:
    straight = Trainee(make_optimizer)
    straight.steps(10)

    first = Trainee(make_optimizer)
    first.steps(4)
    checkpoint.save(tmp_path, 4, first.state(), keep=2)
    first.steps(3)  # what the killed process did after saving: must not leak into the resume
    resumed = Trainee(make_optimizer)
    resumed.restore(checkpoint.load_latest(tmp_path))
    resumed.steps(6)

    for name in straight.params:
        assert torch.equal(resumed.params[name], straight.params[name]), name
        assert torch.equal(resumed.ema[name], straight.ema[name]), name
    assert resumed.progress.history == straight.progress.history
    assert resumed.schedule.get_last_lr() == straight.schedule.get_last_lr()
    assert (
        resumed.optimizer.state_dict()["param_groups"]
        == (straight.optimizer.state_dict()["param_groups"])
    )


def test_the_checkpoint_holds_no_pickle(tmp_path: Path) -> None:
    trainee = Trainee(adamw)
    trainee.steps(2)
    step = checkpoint.save(tmp_path, 2, trainee.state(), keep=1)
    assert sorted(p.name for p in step.iterdir()) == sorted(
        [checkpoint.STATE, checkpoint.TENSORS, checkpoint.DIGEST]
    )
    header = json.loads(_safetensors_header(step / checkpoint.TENSORS))
    assert "optimizer/state/0/exp_avg" in header and "params/big" in header
    assert header["rng/torch"]["dtype"] == "U8"  # generator states are plain uint8 tensors
    saved = json.loads((step / checkpoint.STATE).read_text())
    assert saved["state"]["optimizer"]["param_groups"][0]["betas"] == {"$tuple": [0.9, 0.999]}
    for f in step.iterdir():  # torch.save writes a zip (PK) or a raw pickle (0x80)
        assert f.read_bytes()[:2] not in (b"PK", b"\x80\x02"), f.name


def _safetensors_header(path: Path) -> bytes:
    data = path.read_bytes()
    return data[8 : 8 + int.from_bytes(data[:8], "little")]


def test_tuples_int_keys_and_tag_like_keys_round_trip() -> None:
    base = torch.arange(6.0)
    state = {
        "by_index": {0: {"step": 3}, 1: (1.5, None, "x")},
        "$tensor": "a real key that looks like a tag",
        "views": [base[:3], base[3:]],  # one buffer: safetensors wants separate ones
        "flags": [True, False, float("inf")],
    }
    tree, tensors = encode(state)
    back = decode(json.loads(json.dumps(tree)), tensors)
    assert back["by_index"] == {0: {"step": 3}, 1: (1.5, None, "x")}
    assert back["$tensor"] == state["$tensor"] and back["flags"] == state["flags"]
    assert [t.tolist() for t in back["views"]] == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_what_json_cannot_hold_fails_at_save_time_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"lr_schedule/lr_lambdas/0: function"):
        checkpoint.save(tmp_path, 1, {"lr_schedule": {"lr_lambdas": [lambda s: s]}}, keep=1)
    assert checkpoint.checkpoints(tmp_path) == []


def test_rng_states_come_back() -> None:
    saved = rng_state()
    before = (torch.rand(3), random.random(), np.random.rand(3))
    tree, tensors = encode(saved)
    set_rng_state(decode(json.loads(json.dumps(tree)), tensors))
    after = (torch.rand(3), random.random(), np.random.rand(3))
    assert torch.equal(before[0], after[0]) and before[1] == after[1]
    assert np.array_equal(before[2], after[2])
