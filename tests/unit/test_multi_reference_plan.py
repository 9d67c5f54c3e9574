"""The memory plan traces a step of every training mode: its batch carries the conditioning the
mode appends (on a GPU, `train` traces the step before the run, and the modes' losses refuse a
batch without their conditioning), and the traced peak equals the eager one."""

from __future__ import annotations

import pytest

from tests.unit.test_trainer_plan import eager, shape, warm_up  # noqa: F401 (its autouse)
from trainer.plan_trace import trace


@pytest.mark.parametrize("strategy", ["keyframes", "multi_reference"])
def test_conditioned_modes_are_planned_like_the_step_they_run(strategy: str) -> None:
    step = shape(strategy=strategy)
    traced, measured = trace(step), eager(step)
    assert traced.peak == measured.peak > eager(shape(strategy="audio_video")).peak
