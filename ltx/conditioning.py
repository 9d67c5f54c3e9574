"""How conditioning tokens join the sequence the transformer sees, as the inference pipelines
build it: clean latents appended after the target's tokens at timestep 0, at the positions the
condition pipeline gives a keyframe (`frame_coords`) or the IC-LoRA pipeline a reference
(`reference_coords`). The trainer's strategies and the evaluation's held-out denoising build
their sequences here, so both ask the model the same question."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ltx.loading import component
from stagekit.errors import UserError


def last_frame_coords(
    transformer: torch.nn.Module, batch: int, frames: int, height: int, width: int, fps: float
) -> torch.Tensor:
    """Where the condition pipeline puts a one-image keyframe given at latent index -1 of a
    `frames`-latent-frame video: [B, 3, height*width, 2]."""
    return frame_coords(transformer, batch, frames - 1, height, width, fps)


def frame_coords(
    transformer: torch.nn.Module, batch: int, index: int, height: int, width: int, fps: float
) -> torch.Tensor:
    """Where the condition pipeline puts a one-image keyframe given at latent index `index`
    (> 0): [B, 3, height*width, 2]."""
    from ltx.keyframes import keyframe_coords

    scale = transformer.config.get("vae_scale_factors", (8, 32, 32))
    return keyframe_coords(
        transformer.config, (scale[0], scale[1]), batch, index, 1, height, width, fps
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
    transformer = component(denoiser, "transformer")
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

    transformer = component(denoiser, "transformer")
    cfg = transformer.config
    video_text, audio_text, mask = connect_text(component(denoiser, "connectors"), text)
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
