"""Training modes, chosen by name from an explicit registry (`trainer.strategy`).

A strategy prepares a batch for its mode, computes the loss, and names what its checkpoint
holds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler

from ltx.conditioning import (
    frame_coords,
    last_frame_coords,
    predict_with_appended,
    predict_with_reference,
    reference_coords,
    reference_downscale_factor,
)
from ltx.forward import noisy_latents, predict_velocity
from stagekit.errors import UserError
from trainer.config import TrainerConfig
from trainer.data import Batch
from trainer.objective import draw_sigmas, flow_matching_loss, sharded_randn, summed


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
        parts: dict[str, float] | None = None,
    ) -> torch.Tensor:
        prepared = self.prepare(batch)
        return flow_matching_loss(denoiser, scheduler, prepared, cfg, generator, sigmas, parts)


@dataclass(frozen=True)
class TextToVideo(AudioVideo):
    """Video only: cached audio is ignored and the video stream never attends to audio."""

    name: str = "text_to_video"

    def prepare(self, batch: Batch) -> Batch:
        return replace(batch, audio=None)


@dataclass(frozen=True)
class TextToAudio(AudioVideo):
    """Audio only, for voice and jingle LoRAs: both streams noised as in joint generation (the
    layout the adapter meets at inference), the loss on the audio alone; the adapter sits only
    on the modules that write into the audio stream (`trained_modality`)."""

    name: str = "text_to_audio"

    def loss(
        self,
        denoiser: dict,
        scheduler: FlowMatchEulerDiscreteScheduler,
        batch: Batch,
        cfg: TrainerConfig,
        generator: torch.Generator,
        sigmas: tuple[torch.Tensor, torch.Tensor] | None = None,
        parts: dict[str, float] | None = None,
    ) -> torch.Tensor:
        if batch.audio is None:
            raise UserError(
                "trainer.strategy=text_to_audio needs audio in the cache: clips with sound, "
                "preprocessed with preprocess.with_audio=true"
            )
        sv, sa = sigmas or draw_sigmas(scheduler, batch, cfg, generator)
        noise = sharded_randn(batch.video.shape, generator, batch.shard)
        x_v, _ = noisy_latents(batch.video, noise, sv)
        x_a, target_a = _noised_audio(batch, sa, generator)
        _, pred_a = predict_velocity(denoiser, x_v, x_a, batch.text, sv, sa, fps=batch.fps)
        loss = F.mse_loss(pred_a.float(), target_a)
        if parts is not None:
            parts["audio"] = loss.item()
        return loss


def trained_modality(strategy: str, cache_has_audio: bool) -> str:
    """What a run trains (and so where its adapter goes): `both`, `video` (text_to_video, or a
    cache without audio), or `audio` (text_to_audio)."""
    if strategy == "text_to_audio":
        return "audio"
    return "both" if cache_has_audio and strategy != "text_to_video" else "video"


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
        parts: dict[str, float] | None = None,
    ) -> torch.Tensor:
        sv, sa = sigmas or draw_sigmas(scheduler, batch, cfg, generator)
        x_t, target, token_sigma = _first_frame_clean(batch, batch.video[:, :, :1], sv, generator)
        x_a, target_a = _noised_audio(batch, sa, generator)
        pred_v, pred_a = predict_velocity(
            denoiser, x_t, x_a, batch.text, token_sigma, sa, fps=batch.fps
        )
        audio = None if batch.audio is None else F.mse_loss(pred_a.float(), target_a)
        return summed(F.mse_loss(pred_v[:, :, 1:].float(), target[:, :, 1:]), audio, parts)


@dataclass(frozen=True)
class ReferenceVideo(AudioVideo):
    """IC-LoRA (reference-video conditioning), as LTX2InContextPipeline runs it: the clean
    reference latents are appended after the noisy target tokens, with their own positions
    (their own grid, its spatial axes scaled by the reference's downscale factor, as the
    pipeline computes them: `reference_coords`) and timestep 0; only the target tokens (and
    audio) are in the loss."""

    name: str = "reference_video"

    def references(self, batch: Batch) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """What is appended: the cached control latents [B, C, F, H, W]."""
        if batch.reference is None:
            raise UserError(
                "trainer.strategy=reference_video needs reference latents in the cache: "
                "re-run `ltx-lora preprocess preprocess.reference=edges`"
            )
        return batch.reference

    def loss(
        self,
        denoiser: dict,
        scheduler: FlowMatchEulerDiscreteScheduler,
        batch: Batch,
        cfg: TrainerConfig,
        generator: torch.Generator,
        sigmas: tuple[torch.Tensor, torch.Tensor] | None = None,
        parts: dict[str, float] | None = None,
    ) -> torch.Tensor:
        references = self.references(batch)
        x0 = batch.video
        sv, sa = sigmas or draw_sigmas(scheduler, batch, cfg, generator)
        noise = sharded_randn(x0.shape, generator, batch.shard)
        x_t, target = noisy_latents(x0, noise, sv)
        x_a, target_a = _noised_audio(batch, sa, generator)
        pred_v, pred_a = predict_with_reference(
            denoiser, x_t, references, x_a, batch.text, sv, sa, fps=batch.fps
        )
        audio = None if batch.audio is None else F.mse_loss(pred_a.float(), target_a)
        return summed(F.mse_loss(pred_v.float(), target), audio, parts)


@dataclass(frozen=True)
class MultiReference(ReferenceVideo):
    """Multi-reference IC-LoRA (a reference sheet: several clips or stills per sample), as
    LTX2InContextPipeline runs a list of `reference_conditions` and ltx-pipelines a list of
    `video_conditioning` paths: each reference is encoded on its own, packed, and appended
    after the target in the given order, each on its own grid starting at time 0 with its
    spatial axes scaled by the downscale factor (diffusers 0.42.1 pipeline_ltx2_ic_lora.py
    L1416-1485 `_encode_reference_conditions`; ltx-core reference_video_cond.py L45-100,
    appended once per path by ltx-pipelines iclora_utils.py L119-170), timestep 0 (strength
    1). At strength 1 neither consumer masks attention, so every token sees every other. The
    loss covers only the target's tokens (and audio)."""

    name: str = "multi_reference"

    def references(self, batch: Batch) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """What is appended: the sheet, each reference [B, C, f_i, h, w] in order."""
        if not batch.references:
            raise UserError(
                "trainer.strategy=multi_reference needs reference files in the cache: put "
                "`<clip>_ref0.mp4|png` beside each clip, re-run `ltx-lora curate` and "
                "`ltx-lora preprocess preprocess.reference=files`"
            )
        return batch.references


@dataclass(frozen=True)
class Keyframes(AudioVideo):
    """First and last frame, as LTX2ConditionPipeline conditions on two keyframe images (latent
    index 0 and -1), each re-compressed and encoded on its own (the cache's `keyframe_first`,
    `keyframe_last`): the first image's latent overwrites the first latent frame, timestep 0;
    the last image's is appended after the video's tokens at the positions the pipeline gives
    a keyframe (`ltx.keyframes.keyframe_coords`), timestep 0. With `trainer.keyframe_interior=N`
    N interior images (the cache's `keyframe_interior`) at distinct random latent indices k
    follow, in increasing k, each where the pipeline puts an image given at index k. The loss
    covers only the generated tokens: latent frames 1.. of the video (the last one and those
    under interior keyframes included: the pipeline appends conditions, it does not overwrite
    them) and the audio."""

    name: str = "keyframes"

    def loss(
        self,
        denoiser: dict,
        scheduler: FlowMatchEulerDiscreteScheduler,
        batch: Batch,
        cfg: TrainerConfig,
        generator: torch.Generator,
        sigmas: tuple[torch.Tensor, torch.Tensor] | None = None,
        parts: dict[str, float] | None = None,
    ) -> torch.Tensor:
        if batch.keyframes is None:
            raise UserError(
                "trainer.strategy=keyframes needs keyframe images in the cache: re-run "
                "`ltx-lora preprocess preprocess.keyframes=first_last`"
            )
        first, last, *interior = batch.keyframes
        b, _, f, h, w = batch.video.shape
        picks = interior_picks(f, cfg.keyframe_interior, bool(interior), generator)
        sv, sa = sigmas or draw_sigmas(scheduler, batch, cfg, generator)
        # the first image's own latent, as the pipeline overwrites frame 0
        x_t, target, token_sigma = _first_frame_clean(batch, first, sv, generator)
        appended = [last, *(interior[0][:, :, k - 1 : k] for k in picks)] if picks else [last]
        transformer = denoiser["transformer"]
        coords = torch.cat(
            [frame_coords(transformer, b, k, h, w, batch.fps) for k in [f - 1, *picks]], dim=2
        )
        x_a, target_a = _noised_audio(batch, sa, generator)
        pred_v, pred_a = predict_with_appended(
            denoiser, x_t, token_sigma, appended, coords, x_a, batch.text, sa, fps=batch.fps
        )
        audio = None if batch.audio is None else F.mse_loss(pred_a.float(), target_a)
        return summed(F.mse_loss(pred_v[:, :, 1:].float(), target[:, :, 1:]), audio, parts)


def interior_picks(frames: int, n: int, cached: bool, generator: torch.Generator) -> list[int]:
    """`n` distinct interior latent indices (1..frames-2) in increasing order, drawn from
    `generator` (nothing drawn for n = 0, so first/last training is unchanged)."""
    if n == 0:
        return []
    if not cached:
        raise UserError(
            "trainer.keyframe_interior needs the interior frames in the cache: re-run "
            "`ltx-lora preprocess preprocess.keyframes=first_last_interior`"
        )
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    # positions are a host-side choice: drawn on real tensors even while the memory plan
    # traces the step on fake ones (trainer.plan_trace), where a value cannot be read
    with unset_fake_temporarily():
        order = torch.randperm(frames - 2, generator=generator)[: min(n, frames - 2)]
        return sorted(int(i) + 1 for i in order)


def _first_frame_clean(
    batch: Batch, first: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The video noised at `sigma` [B] but its first latent frame set to `first` [B, C, 1, H, W]
    and at timestep 0 (per-token noise levels [B, F*H*W], frame-major): x_t, target, levels."""
    x0 = batch.video  # [B, C, F, H, W]
    b, _, f, h, w = x0.shape
    noise = sharded_randn(x0.shape, generator, batch.shard)
    x_t, target = noisy_latents(x0, noise, sigma)
    x_t[:, :, 0] = first[:, :, 0]
    token_sigma = sigma[:, None].expand(b, f * h * w).clone()
    token_sigma[:, : h * w] = 0.0
    return x_t, target, token_sigma


def _noised_audio(batch: Batch, sigma: torch.Tensor, generator: torch.Generator):
    if batch.audio is None:
        return None, None
    noise = sharded_randn(batch.audio.shape, generator, batch.shard)
    return noisy_latents(batch.audio, noise, sigma)


__all__ = [  # the sequence builders live in ltx.conditioning; importable from here too
    "STRATEGIES",
    "frame_coords",
    "get_strategy",
    "last_frame_coords",
    "predict_with_reference",
    "reference_coords",
    "reference_downscale_factor",
    "trained_modality",
]

MODES = (
    AudioVideo(),
    TextToVideo(),
    TextToAudio(),
    ImageToVideo(),
    ReferenceVideo(),
    MultiReference(),
    Keyframes(),
)
STRATEGIES = {s.name: s for s in MODES}


def get_strategy(name: str) -> AudioVideo:
    """The registered strategy called `name` (the config schema already restricts names)."""
    return STRATEGIES[name]
