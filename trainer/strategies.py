"""Training modes, chosen by name from an explicit registry (`trainer.strategy`).

A strategy prepares a batch for its mode, computes the loss, and names what its checkpoint
holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler

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
        if batch.reference is None:
            raise UserError(
                "trainer.strategy=reference_video needs reference latents in the cache: "
                "re-run `ltx-lora preprocess preprocess.reference=edges`"
            )
        x0 = batch.video
        sv, sa = sigmas or draw_sigmas(scheduler, batch, cfg, generator)
        noise = sharded_randn(x0.shape, generator, batch.shard)
        x_t, target = noisy_latents(x0, noise, sv)
        x_a, target_a = _noised_audio(batch, sa, generator)
        pred_v, pred_a = predict_with_reference(
            denoiser, x_t, batch.reference, x_a, batch.text, sv, sa, fps=batch.fps
        )
        audio = None if batch.audio is None else F.mse_loss(pred_a.float(), target_a)
        return summed(F.mse_loss(pred_v.float(), target), audio, parts)


@dataclass(frozen=True)
class MultiReference(AudioVideo):
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
        if not batch.references:
            raise UserError(
                "trainer.strategy=multi_reference needs reference files in the cache: put "
                "`<clip>_ref0.mp4|png` beside each clip, re-run `ltx-lora curate` and "
                "`ltx-lora preprocess preprocess.reference=files`"
            )
        x0 = batch.video
        sv, sa = sigmas or draw_sigmas(scheduler, batch, cfg, generator)
        noise = sharded_randn(x0.shape, generator, batch.shard)
        x_t, target = noisy_latents(x0, noise, sv)
        x_a, target_a = _noised_audio(batch, sa, generator)
        pred_v, pred_a = predict_with_reference(
            denoiser, x_t, batch.references, x_a, batch.text, sv, sa, fps=batch.fps
        )
        audio = None if batch.audio is None else F.mse_loss(pred_a.float(), target_a)
        return summed(F.mse_loss(pred_v.float(), target), audio, parts)


@dataclass(frozen=True)
class Keyframes(AudioVideo):
    """First and last frame, as LTX2ConditionPipeline conditions on two keyframe images (latent
    index 0 and -1), each re-compressed and encoded on its own (the cache's `keyframe_first`,
    `keyframe_last`): the first image's latent overwrites the first latent frame, timestep 0;
    the last image's is appended after the video's tokens at the positions the pipeline gives
    a keyframe (`ltx.keyframes.keyframe_coords`), timestep 0. The loss covers only the
    generated tokens: latent frames 1.. of the video (the last one included) and the audio."""

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
        first, last = batch.keyframes
        b, _, f, h, w = batch.video.shape
        sv, sa = sigmas or draw_sigmas(scheduler, batch, cfg, generator)
        # the first image's own latent, as the pipeline overwrites frame 0
        x_t, target, token_sigma = _first_frame_clean(batch, first, sv, generator)
        coords = last_frame_coords(denoiser["transformer"], b, f, h, w, batch.fps)
        x_a, target_a = _noised_audio(batch, sa, generator)
        pred_v, pred_a = predict_with_appended(
            denoiser, x_t, token_sigma, last, coords, x_a, batch.text, sa, fps=batch.fps
        )
        audio = None if batch.audio is None else F.mse_loss(pred_a.float(), target_a)
        return summed(F.mse_loss(pred_v[:, :, 1:].float(), target[:, :, 1:]), audio, parts)


def last_frame_coords(
    transformer: torch.nn.Module, batch: int, frames: int, height: int, width: int, fps: float
) -> torch.Tensor:
    """Where the condition pipeline puts a one-image keyframe given at latent index -1 of a
    `frames`-latent-frame video: [B, 3, height*width, 2]."""
    from ltx.keyframes import keyframe_coords

    scale = transformer.config.get("vae_scale_factors", (8, 32, 32))
    return keyframe_coords(
        transformer.config, (scale[0], scale[1]), batch, frames - 1, 1, height, width, fps
    )


def predict_with_reference(
    denoiser: dict,
    video: torch.Tensor,
    reference: torch.Tensor | Sequence[torch.Tensor],
    audio: torch.Tensor | None,
    text: dict[str, torch.Tensor],
    sigma_video: torch.Tensor,
    sigma_audio: torch.Tensor,
    *,
    fps: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`ltx.forward.predict_velocity` with reference tokens in the sequence: packed tokens
    [target | reference 0 | reference 1 ...], coords [target grid | each reference's grid] (as
    LTX2InContextPipeline computes them), timestep [σ... | 0...]. `reference`: one
    [B, C, f, h, w] latent or several (their frame counts may differ: a still is one frame).
    Returns the target's velocity [B, C, F, H, W] and the audio's."""
    transformer = denoiser["transformer"]
    b, _, f, h, w = video.shape
    references = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    coords = torch.cat([reference_coords(transformer, r, (h, w), fps) for r in references], dim=2)
    per_token = sigma_video.reshape(-1, 1).expand(b, f * h * w)
    return predict_with_appended(
        denoiser, video, per_token, references, coords, audio, text, sigma_audio, fps=fps
    )


def reference_downscale_factor(reference: torch.Tensor, target: tuple[int, int]) -> int:
    """How many times smaller than the target (latent height, width) a reference is."""
    _, _, _, rh, rw = reference.shape
    factor = target[0] // rh
    if rh * factor != target[0] or rw * factor != target[1]:
        raise UserError(
            f"a reference of {rh}x{rw} latents is not the {target[0]}x{target[1]} target "
            "scaled down by a whole factor: re-run `ltx-lora preprocess`"
        )
    return factor


def reference_coords(
    transformer: torch.nn.Module, reference: torch.Tensor, target: tuple[int, int], fps: float
) -> torch.Tensor:
    """Positions [B, 3, tokens, 2] of reference latents [B, C, F, H, W] appended after a
    target of latent size `target`: the reference's own grid, its spatial axes scaled by the
    downscale factor into the target's coordinates (diffusers 0.42.1
    `LTX2InContextPipeline._encode_reference_conditions`; ltx-pipelines `downscale_factor`)."""
    b, _, rf, rh, rw = reference.shape
    coords = transformer.rope.prepare_video_coords(b, rf, rh, rw, reference.device, fps=fps)
    factor = reference_downscale_factor(reference, target)
    if factor != 1:
        coords[:, 1:3] = coords[:, 1:3] * factor
    return coords


def predict_with_appended(
    denoiser: dict,
    video: torch.Tensor,
    token_sigma: torch.Tensor,
    appended: torch.Tensor | Sequence[torch.Tensor],
    appended_coords: torch.Tensor,
    audio: torch.Tensor | None,
    text: dict[str, torch.Tensor],
    sigma_audio: torch.Tensor,
    *,
    fps: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The velocity of `video` [B, C, F, H, W] (per-token noise levels `token_sigma` [B, F*H*W])
    with clean conditioning latents `appended` [B, C, f, h, w] (or several, packed one after
    the other) after its tokens at positions `appended_coords` [B, 3, tokens, 2], timestep 0:
    how the IC-LoRA and condition pipelines lay out a sequence. Returns the video's velocity
    (appended tokens dropped) and the audio's."""
    from diffusers import LTX2Pipeline

    from ltx.forward import _packed_audio, _timestep, connect_text
    from ltx.keyframes import marker_kwargs
    from ltx.sampling import use_cross_timestep

    transformer = denoiser["transformer"]
    cfg = transformer.config
    video_text, audio_text, mask = connect_text(denoiser["connectors"], text)
    b, _, f, h, w = video.shape
    target = LTX2Pipeline._pack_latents(video, cfg.patch_size, cfg.patch_size_t)
    parts = [appended] if isinstance(appended, torch.Tensor) else list(appended)
    extra = torch.cat(
        [LTX2Pipeline._pack_latents(a, cfg.patch_size, cfg.patch_size_t) for a in parts], dim=1
    )
    tokens = torch.cat([target, extra.to(target)], dim=1)
    packed_audio, isolate = _packed_audio(audio, b, cfg.audio_in_channels, target)
    per_token = torch.cat([token_sigma, token_sigma.new_zeros(b, extra.shape[1])], dim=1)
    t_video, t_audio = _timestep(per_token, b, tokens), _timestep(sigma_audio, b, tokens)
    device, dtype = tokens.device, transformer.dtype
    coords = torch.cat(
        [
            transformer.rope.prepare_video_coords(b, f, h, w, device, fps=fps),
            appended_coords.to(device),
        ],
        dim=2,
    )
    video_out, audio_out = transformer(
        hidden_states=tokens.to(dtype),
        audio_hidden_states=packed_audio.to(dtype),
        encoder_hidden_states=video_text.to(dtype),
        audio_encoder_hidden_states=audio_text.to(dtype),
        timestep=t_video,
        audio_timestep=t_audio,
        sigma=t_video.amax(dim=1),
        audio_sigma=t_audio,
        encoder_attention_mask=mask,
        audio_encoder_attention_mask=mask,
        num_frames=f,
        height=h,
        width=w,
        fps=fps,
        audio_num_frames=packed_audio.shape[1],
        video_coords=coords,
        audio_coords=transformer.audio_rope.prepare_audio_coords(b, packed_audio.shape[1], device),
        isolate_modalities=isolate,
        use_cross_timestep=use_cross_timestep(transformer),
        return_dict=False,
        # the target's first frame only: appended conditions stay unmarked
        **marker_kwargs(transformer, b, tokens.shape[1], h, w),
    )
    video_v = LTX2Pipeline._unpack_latents(
        video_out[:, : target.shape[1]].float(), f, h, w, cfg.patch_size, cfg.patch_size_t
    )
    if audio is None:
        return video_v, None
    _, _, length, mel = audio.shape
    return video_v, LTX2Pipeline._unpack_audio_latents(audio_out.float(), length, num_mel_bins=mel)


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
