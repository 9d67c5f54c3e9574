"""Flow matching on velocity: x_t = (1-σ)·x0 + σ·noise, target noise - x0, timestep σ·1000."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler

from ltx.forward import noisy_latents, predict_velocity
from ltx.schedule import sample_training_sigmas
from trainer.config import TrainerConfig
from trainer.data import Batch


def video_tokens(video: torch.Tensor) -> int:
    """Latent tokens of a [B, C, F, H, W] video: the length the schedule shift depends on."""
    return int(video.shape[2] * video.shape[3] * video.shape[4])


def sharded_randn(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator, shard: tuple[int, int]
) -> torch.Tensor:
    """This rank's slice of noise drawn for the whole global batch: N processes then draw
    exactly what one process with the global batch draws."""
    rank, world = shard
    full = torch.randn((shape[0] * world, *shape[1:]), generator=generator)
    return full[rank * shape[0] : (rank + 1) * shape[0]]


def draw_sigmas(
    scheduler: FlowMatchEulerDiscreteScheduler,
    batch: Batch,
    cfg: TrainerConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent (video, audio) noise levels [B] each, shifted for the video's length."""
    draw = dict(
        mean=cfg.sigma_mean,
        std=cfg.sigma_std,
        uniform_fraction=cfg.uniform_fraction,
        generator=generator,
    )
    n, seq = batch.video.shape[0], video_tokens(batch.video)
    rank, world = batch.shard
    mine = slice(rank * n, (rank + 1) * n)
    return (
        sample_training_sigmas(scheduler, n * world, seq, **draw)[mine],
        sample_training_sigmas(scheduler, n * world, seq, **draw)[mine],
    )


def flow_matching_loss(
    denoiser: dict[str, torch.nn.Module],
    scheduler: FlowMatchEulerDiscreteScheduler,
    batch: Batch,
    cfg: TrainerConfig,
    generator: torch.Generator,
    sigmas: tuple[torch.Tensor, torch.Tensor] | None = None,
    parts: dict[str, float] | None = None,
) -> torch.Tensor:
    """MSE on velocity for video, plus audio when cached; audio gets its own noise level.

    `denoiser` holds the `transformer` (with the LoRA) and the text `connectors`;
    `sigmas` fixes (video, audio) noise levels, as the validation grid does; `parts`, when
    given, receives each modality's loss (`summed`).
    """
    if sigmas is None:
        sigmas = draw_sigmas(scheduler, batch, cfg, generator)
    sv, sa = sigmas
    noise_v = sharded_randn(batch.video.shape, generator, batch.shard)
    x_v, target_v = noisy_latents(batch.video, noise_v, sv)
    x_a, target_a = None, None
    if batch.audio is not None:
        noise_a = sharded_randn(batch.audio.shape, generator, batch.shard)
        x_a, target_a = noisy_latents(batch.audio, noise_a, sa)
    pred_v, pred_a = predict_velocity(denoiser, x_v, x_a, batch.text, sv, sa, fps=batch.fps)
    audio = None if batch.audio is None else F.mse_loss(pred_a.float(), target_a)
    return summed(F.mse_loss(pred_v.float(), target_v), audio, parts)


def summed(
    video: torch.Tensor, audio: torch.Tensor | None, parts: dict[str, float] | None
) -> torch.Tensor:
    """The training loss: video's plus audio's (when there is audio), each recorded in
    `parts` (`video`, `audio`) for the per-modality logs."""
    if parts is not None:
        parts["video"] = video.item()
        if audio is not None:
            parts["audio"] = audio.item()
    return video if audio is None else video + audio
