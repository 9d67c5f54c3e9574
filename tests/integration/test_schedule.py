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


@pytest.mark.parametrize("version", ["2.0", "2.3", "2.5"])
def test_training_shift_is_the_deployed_samplers_per_version_and_size(version: str) -> None:
    """Each version's own pipeline (tiny, its architecture) under the scheduler config the
    version's model folder carries: the mu `LTX2Pipeline.__call__` passes to `set_timesteps`
    equals the one training derives from its latents, over sizes on both sides of the
    1024..4096-token anchors (the tiny VAE is x8 space, x2 time)."""
    from ltx.tiny_build import build_tiny_pipeline
    from ltx.versions import SCHEDULER
    from trainer.objective import video_tokens

    seen: list[float] = []

    class Recording(FlowMatchEulerDiscreteScheduler):
        """Records the mu it is given (the pipeline deep-copies it for the audio stream)."""

        def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None):
            seen.append(mu)
            return super().set_timesteps(num_inference_steps, device, sigmas, mu)

    pipe = build_tiny_pipeline(0, version=version)
    scheduler = Recording.from_config(SCHEDULER)
    pipe.scheduler = scheduler
    pipe.set_progress_bar_config(disable=True)
    for frames, height, width in [(9, 64, 64), (9, 128, 256), (17, 192, 256)]:  # 320..6912
        seen.clear()
        latents = pipe(
            prompt="a cat",
            width=width,
            height=height,
            num_frames=frames,
            num_inference_steps=2,  # one step cannot be stretched to the terminal sigma
            guidance_scale=1.0,
            output_type="latent",
            return_dict=False,
        )[0]
        shape = (1, 8, (frames - 1) // 2 + 1, height // 8, width // 8)  # what training caches
        assert tuple(latents.shape) == shape  # the grid training's latents have
        assert seen[0] == pytest.approx(sequence_shift(scheduler, video_tokens(torch.zeros(shape))))
