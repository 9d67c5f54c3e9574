"""Checkpoints under damage: resume passes over a damaged newest checkpoint (cut short, or one
changed byte that torch would still load) to the newest intact one, saying which and why; when
every checkpoint is damaged it stops in one line naming them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stagekit.errors import UserError
from trainer import checkpoint


def saved(run: Path) -> list[Path]:
    run.mkdir(parents=True)
    return [
        checkpoint.save(run, step, {"step": step, "w": torch.full((64, 64), float(step))}, 3)
        for step in (4, 8)
    ]


def test_a_cut_short_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys) -> None:
    _, newest = saved(tmp_path / "run")
    state = newest / checkpoint.STATE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    loaded = checkpoint.load_latest(tmp_path / "run")
    assert loaded["step"] == 4 and torch.equal(loaded["w"], torch.full((64, 64), 4.0))
    out = capsys.readouterr().out
    assert str(newest) in out and "damaged" in out and "step-000004" in out


def test_a_changed_byte_is_caught_by_the_digest(tmp_path) -> None:
    """A byte inside a tensor's data: torch.load would return wrong weights without a word."""
    _, newest = saved(tmp_path / "run")
    state = newest / checkpoint.STATE
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01
    state.write_bytes(bytes(data))
    assert torch.load(state, weights_only=True)["step"] == 8  # loads, silently wrong
    assert checkpoint.load_latest(tmp_path / "run")["step"] == 4


def test_every_checkpoint_damaged_is_one_line_naming_them(tmp_path) -> None:
    for found in saved(tmp_path / "run"):
        (found / checkpoint.STATE).write_bytes(b"\0" * 10)
    with pytest.raises(UserError) as err:
        checkpoint.load_latest(tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and "step-000004" in message and "step-000008" in message
    assert "trainer.resume=false" in message


def test_no_checkpoint_yet_is_none(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    assert checkpoint.load_latest(tmp_path / "run") is None
