"""Training modes, chosen by name from an explicit registry (`trainer.strategy`).

A strategy prepares a batch for its mode, computes the loss, and names what its checkpoint
holds. A reference-video (IC-LoRA) mode slots in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler

from ltx.forward import noisy_latents, predict_velocity
from trainer.config import TrainerConfig
from trainer.data import Batch
from trainer.objective import draw_sigmas, flow_matching_loss, sharded_randn


@dataclass(frozen=True)
class AudioVideo:
    """Joint audio+video: both streams noised at independent levels, both losses summed."""

    name: str = "audio_video"
    checkpoint_parts: tuple[str, ...] = ("adapter", "optimizer", "lr_schedule", "rng", "data")

    def prepare(self, batch: Batch) -> Batch:
        return batch

    def loss(
        self,
        denoiser: dict,
        scheduler: FlowMatchEulerDiscreteScheduler,
        batch: Batch,
        cfg: TrainerConfig,
        generator: torch.Generator,
        sigmas: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return flow_matching_loss(denoiser, scheduler, self.prepare(batch), cfg, generator, sigmas)


@dataclass(frozen=True)
class TextToVideo(AudioVideo):
    """Video only: cached audio is ignored and the video stream never attends to audio."""

    name: str = "text_to_video"

    def prepare(self, batch: Batch) -> Batch:
        return replace(batch, audio=None)


@dataclass(frozen=True)
class ImageToVideo(AudioVideo):
    """The first latent frame stays clean with its own timestep 0 (as LTX2ImageToVideoPipeline
    conditions on an image); the loss covers only the frames the model has to generate."""

    name: str = "image_to_video"

    def loss(
        self,
        denoiser: dict,
        scheduler: FlowMatchEulerDiscreteScheduler,
        batch: Batch,
        cfg: TrainerConfig,
        generator: torch.Generator,
        sigmas: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x0 = batch.video  # [B, C, F, H, W]
        b, _, f, h, w = x0.shape
        sv, sa = sigmas or draw_sigmas(scheduler, batch, cfg, generator)
        noise = sharded_randn(x0.shape, generator, batch.shard)
        x_t, target = noisy_latents(x0, noise, sv)
        x_t[:, :, 0] = x0[:, :, 0]
        token_sigma = sv[:, None].expand(b, f * h * w).clone()  # tokens are frame-major
        token_sigma[:, : h * w] = 0.0
        x_a, target_a = _noised_audio(batch, sa, generator)
        pred_v, pred_a = predict_velocity(
            denoiser, x_t, x_a, batch.text, token_sigma, sa, fps=batch.fps
        )
        loss = F.mse_loss(pred_v[:, :, 1:].float(), target[:, :, 1:])
        if batch.audio is not None:
            loss = loss + F.mse_loss(pred_a.float(), target_a)
        return loss


def _noised_audio(batch: Batch, sigma: torch.Tensor, generator: torch.Generator):
    if batch.audio is None:
        return None, None
    noise = sharded_randn(batch.audio.shape, generator, batch.shard)
    return noisy_latents(batch.audio, noise, sigma)


STRATEGIES = {s.name: s for s in (AudioVideo(), TextToVideo(), ImageToVideo())}


def get_strategy(name: str) -> AudioVideo:
    """The registered strategy called `name` (the config schema already restricts names)."""
    return STRATEGIES[name]
