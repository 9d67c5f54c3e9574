"""Checkpoints under damage: resume passes over a damaged newest checkpoint (cut short, or one
changed byte that safetensors would still load) to the newest intact one, saying which and why;
when every checkpoint is damaged it stops in one line naming them. An earlier version's pickle
is refused in one line that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stagekit.errors import UserError
from trainer import checkpoint


def saved(run: Path) -> list[Path]:
    run.mkdir(parents=True)
    return [
        checkpoint.save(run, step, {"step": step, "w": torch.full((64, 64), float(step))}, 3)
        for step in (4, 8)
    ]


@pytest.mark.parametrize("name", [checkpoint.TENSORS, checkpoint.STATE])
def test_a_cut_short_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys, name) -> None:
    _, newest = saved(tmp_path / "run")
    state = newest / name
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    loaded = checkpoint.load_latest(tmp_path / "run")
    assert loaded["step"] == 4 and torch.equal(loaded["w"], torch.full((64, 64), 4.0))
    out = capsys.readouterr().out
    assert str(newest) in out and "damaged" in out and "step-000004" in out


def test_a_changed_byte_is_caught_by_the_digest(tmp_path) -> None:
    """A byte inside a tensor's data: safetensors would return wrong weights without a word."""
    _, newest = saved(tmp_path / "run")
    tensors = newest / checkpoint.TENSORS
    data = bytearray(tensors.read_bytes())
    data[-100] ^= 0x01
    tensors.write_bytes(bytes(data))
    assert not torch.equal(load_file(tensors)["w"], torch.full((64, 64), 8.0))  # silently wrong
    assert checkpoint.load_latest(tmp_path / "run")["step"] == 4


def test_every_checkpoint_damaged_is_one_line_naming_them(tmp_path) -> None:
    for found in saved(tmp_path / "run"):
        (found / checkpoint.TENSORS).write_bytes(b"\0" * 10)
    with pytest.raises(UserError) as err:
        checkpoint.load_latest(tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and "step-000004" in message and "step-000008" in message
    assert "trainer.resume=false" in message


def test_no_checkpoint_yet_is_none(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    assert checkpoint.load_latest(tmp_path / "run") is None


def test_an_earlier_versions_pickle_is_refused_in_one_line(tmp_path) -> None:
    run = tmp_path / "run"
    old = run / "step-000004"
    old.mkdir(parents=True)
    torch.save({"step": 4}, old / "state.pt")  # what versions before the safetensors format wrote
    with pytest.raises(UserError) as err:
        checkpoint.load_latest(run)
    message = str(err.value)
    assert "\n" not in message and str(old) in message and "pickle" in message
    assert "trainer.resume=false" in message and f"delete {run}" in message
