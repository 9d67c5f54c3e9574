"""Held-out denoising in the keyframe and reference modes asks the model what the trainer's
strategy trains it on: for the same clip, noise and sigma, the evaluation's error equals the
strategy's loss (trainer.strategies, run here beside it on the tiny model), and conditioning
changes the answer (so a test that ignored it would fail)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import LTX2Pipeline

from evaluation.conditioning import Conditioning
from evaluation.denoise_layout import Conditioned, clip_layout, conditioned_velocity, noised_layout
from ltx.controls import downscaled, edge_frames
from ltx.encode import encode_prompts, encode_video
from ltx.forward import noisy_latents, predict_velocity
from ltx.keyframes import keyframe_latent
from ltx.tiny_build import build_tiny_pipeline
from trainer.cache import compact_text, text_inputs
from trainer.config import TrainerConfig
from trainer.data import Batch
from trainer.objective import sharded_randn
from trainer.strategies import get_strategy

FPS = 24.0
SIGMA = torch.tensor([0.6])


@pytest.fixture(scope="module")
def tiny() -> tuple[LTX2Pipeline, np.ndarray, dict[str, torch.Tensor]]:
    pipe = build_tiny_pipeline(0)
    t, s = pipe.vae.temporal_compression_ratio, pipe.vae.spatial_compression_ratio
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, size=(4 * t + 1, 4 * s, 6 * s, 3), dtype=np.uint8)
    text = text_inputs(compact_text(encode_prompts(pipe, ["a mascot waves"])))
    return pipe, video, text


def strategy_loss(pipe: LTX2Pipeline, strategy: str, batch: Batch) -> float:
    """The trainer's loss at SIGMA, its noise the first draw of a generator seeded 0."""
    denoiser = {"transformer": pipe.transformer, "connectors": pipe.connectors}
    with torch.no_grad():
        loss = get_strategy(strategy).loss(
            denoiser, pipe.scheduler, batch, TrainerConfig(),
            torch.Generator().manual_seed(0), sigmas=(SIGMA, SIGMA),
        )  # fmt: skip
    return loss.item()


def evaluation_error(
    pipe: LTX2Pipeline, latents: torch.Tensor, text: dict, cond: Conditioning, how: Conditioned
) -> tuple[float, float]:
    """(the evaluation's error with `cond`, the unconditioned error) on the same noise."""
    noise = sharded_randn(latents.shape, torch.Generator().manual_seed(0), (0, 1))
    with torch.no_grad():
        x_t, target = noisy_latents(latents, noise, SIGMA)
        plain, _ = predict_velocity(pipe, x_t.clone(), None, text, SIGMA, SIGMA, fps=FPS)
        layout = clip_layout(pipe, cond, latents.shape[2], how)
        levels = noised_layout(layout, x_t, SIGMA)
        velocity, start = conditioned_velocity(pipe, layout, x_t, levels, text, FPS)
    error = float(((velocity - target)[:, :, start:] ** 2).mean())
    return error, float(((plain - target)[:, :, start:] ** 2).mean())


HOW = Conditioned("2.0", lambda _p, _f: None, {})  # LTX-2.0's keyframe CRF


def test_keyframes_error_is_the_keyframes_strategy_loss(tiny) -> None:
    pipe, video, text = tiny
    latents = encode_video(pipe.vae, video)[None]
    first, last = (keyframe_latent(pipe.vae, f, "2.0")[None] for f in (video[0], video[-1]))
    batch = replace(Batch(latents, None, text, FPS), keyframes=(first, last))
    cond = Conditioning(Path("clip.mp4"), ((video[0], 0), (video[-1], -1)))
    error, plain = evaluation_error(pipe, latents, text, cond, HOW)
    assert error == pytest.approx(strategy_loss(pipe, "keyframes", batch), rel=1e-5)
    assert abs(error - plain) > 1e-4 * plain


@pytest.mark.parametrize("factor", [1, 2])
def test_reference_error_is_the_ic_lora_strategy_loss(tiny, factor: int) -> None:
    """The Sobel control the evaluation derives, downscaled and encoded as the cache does for
    preprocess.reference=edges, appended as ReferenceVideo appends it."""
    pipe, video, text = tiny
    latents = encode_video(pipe.vae, video)[None]
    control = edge_frames(video)
    reference = encode_video(pipe.vae, downscaled(control, factor, pipe.vae))[None]
    batch = replace(Batch(latents, None, text, FPS), reference=reference)
    cond = Conditioning(Path("clip.mp4"), reference=control, factor=factor)
    error, plain = evaluation_error(pipe, latents, text, cond, HOW)
    assert error == pytest.approx(strategy_loss(pipe, "reference_video", batch), rel=1e-5)
    assert abs(error - plain) > 1e-4 * plain


def test_a_sheet_error_is_the_multi_reference_strategy_loss(tiny) -> None:
    """A sheet of a 9-frame clip and a still; a 12-frame clip is cut to the 9 frames (8k + 1)
    a VAE takes, as curation conforms a reference."""
    pipe, video, text = tiny
    latents = encode_video(pipe.vae, video)[None]
    moving, still = 255 - video[:12], video[3:4]
    refs = tuple(encode_video(pipe.vae, v)[None] for v in (moving[:9], still))
    batch = replace(Batch(latents, None, text, FPS), references=refs)
    cond = Conditioning(Path("clip.mp4"), sheet=(moving, still))
    error, plain = evaluation_error(pipe, latents, text, cond, HOW)
    assert error == pytest.approx(strategy_loss(pipe, "multi_reference", batch), rel=1e-5)
    assert abs(error - plain) > 1e-4 * plain
