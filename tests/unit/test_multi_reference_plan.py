"""The memory plan traces a step of every training mode: its batch carries the conditioning the
mode appends (on a GPU, `train` traces the step before the run, and the modes' losses refuse a
batch without their conditioning), and the traced peak equals the eager one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.unit.test_trainer_plan import eager, shape, warm_up  # noqa: F401 (its autouse)
from trainer.plan_trace import trace


@pytest.mark.parametrize("strategy", ["keyframes", "multi_reference"])
def test_conditioned_modes_are_planned_like_the_step_they_run(strategy: str) -> None:
    step = shape(strategy=strategy)
    traced, measured = trace(step), eager(step)
    assert traced.peak == measured.peak > eager(shape(strategy="audio_video")).peak


def test_a_whole_sheet_and_interior_keyframes_are_planned() -> None:
    """Every reference of the sheet, and the interior keyframes a step appends, count."""
    one = shape(strategy="multi_reference")
    c, f, h, w = one.video[1:]
    sheet = replace(one, references=((c, f, h, w), (c, 1, h, w), (c, f, h, w)))
    assert trace(sheet).peak == eager(sheet).peak > eager(one).peak
    ends = replace(shape(strategy="keyframes"), video=(one.video[0], c, 3, h, w))
    interior = replace(ends, keyframe_interior=1)
    assert trace(interior).peak == eager(interior).peak > eager(ends).peak


def test_the_sheet_is_read_from_the_cache(tmp_path: Path) -> None:
    """`train`'s plan reads the largest shard's references from its header, in sheet order."""
    from safetensors.torch import save_file

    from trainer.cache import TEXT_LENGTH
    from trainer.plan_sizes import latents_from_cache

    tensors = {
        "video": torch.zeros(8, 2, 2, 3),
        "reference.10": torch.zeros(8, 1, 1, 1),
        "reference.2": torch.zeros(8, 2, 1, 2),
        TEXT_LENGTH: torch.tensor([5]),
    }
    save_file(tensors, str(tmp_path / "a.safetensors"))
    index = {"entries": {"a": {"file": "a.safetensors", "bucket": [96, 64, 9], "fps": 24}}}
    latents = latents_from_cache(tmp_path, index, "multi_reference")
    assert latents.references == ((8, 2, 1, 2), (8, 1, 1, 1))  # 2 before 10
    assert latents.video == (8, 2, 2, 3) and latents.text_tokens == 5
