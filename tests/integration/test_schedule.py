"""Training draws σ through the same shift the inference scheduler applies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.ltx2.pipeline_ltx2 import calculate_shift

from ltx.schedule import sample_training_sigmas, sequence_shift, shift_sigmas
from ltx.tiny import SCHEDULER_CONFIG


@pytest.fixture
def scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


@pytest.mark.parametrize(
    ("frames", "height", "width"), [(17, 64, 64), (121, 512, 768), (257, 1024, 1536)]
)
def test_shift_matches_the_inference_schedule(scheduler, frames, height, width) -> None:
    """LTX-2 latent grid (×8 time, ×32 space): the pipeline's sigmas for that many tokens."""
    seq = ((frames - 1) // 8 + 1) * (height // 32) * (width // 32)
    c = scheduler.config
    mu = calculate_shift(seq, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
    assert sequence_shift(scheduler, seq) == pytest.approx(mu)
    grid = np.linspace(1.0, 1 / 8, 8)
    plain = FlowMatchEulerDiscreteScheduler(**{**SCHEDULER_CONFIG, "shift_terminal": None})
    plain.set_timesteps(sigmas=grid, mu=mu)
    ours = shift_sigmas(scheduler, torch.tensor(grid, dtype=torch.float64), seq)
    assert torch.allclose(ours.float(), plain.sigmas[:-1].float(), atol=1e-6)


def test_longer_videos_get_noisier_training_sigmas(scheduler) -> None:
    def mean_sigma(seq: int) -> float:
        g = torch.Generator().manual_seed(0)
        return (
            sample_training_sigmas(
                scheduler, 4000, seq, mean=0.0, std=1.0, uniform_fraction=0.0, generator=g
            )
            .mean()
            .item()
        )

    assert mean_sigma(256) < mean_sigma(4096) < mean_sigma(16384)


def test_uniform_share_and_range(scheduler) -> None:
    g = torch.Generator().manual_seed(0)
    s = sample_training_sigmas(
        scheduler, 20000, 4096, mean=0.0, std=0.3, uniform_fraction=0.25, generator=g
    )
    assert s.min() > 0 and s.max() <= 1
    # a narrow logit-normal never reaches σ<0.05; only the uniform share does (≈ 0.25·0.05)
    assert (s < 0.05).float().mean().item() == pytest.approx(0.25 * 0.05, abs=0.004)
