"""One denoiser call exactly as a step of `LTX2Pipeline.__call__` makes it, for training.

Flow matching (LTX-2): x_t = (1 - σ) x_0 + σ ε, the transformer predicts the velocity ε - x_0,
and it is conditioned on timestep = σ * 1000 (the scheduler's `num_train_timesteps`).
"""

from __future__ import annotations

from typing import Any

import torch

from ltx.loading import component

TIMESTEP_SCALE = 1000.0


def connect_text(
    connectors: Any, text: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The second half of `LTX2TextConnectors.forward` on `encode_prompts` output:
    -> (video text [B, T, D], audio text [B, T, D_a], binary mask [B, T])."""
    video_in = text["prompt_features"]
    audio_in = text.get("audio_prompt_features", video_in)  # LTX-2.0 shares one projection
    mask = text["prompt_attention_mask"].to(video_in.device)
    batch, length = mask.shape
    # Additive mask: 0 on tokens, -max on padding (which the connectors replace by registers).
    additive = (mask.to(torch.int64) - 1).to(video_in.dtype).reshape(batch, 1, -1, length)
    additive = additive * torch.finfo(video_in.dtype).max
    video, video_mask = connectors.video_connector(video_in, additive)
    binary = (video_mask < 1e-6).to(torch.int64).reshape(batch, length, 1)
    audio, _ = connectors.audio_connector(audio_in, additive)
    return video * binary, audio, binary.squeeze(-1)


def predict_velocity(
    pipe_or_components: Any,
    video_latents: torch.Tensor,
    audio_latents: torch.Tensor | None,
    text: dict[str, torch.Tensor],
    sigma_video: torch.Tensor,
    sigma_audio: torch.Tensor,
    *,
    fps: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Velocity for noisy latents in the denoiser's (normalised) space.

    video_latents [B, C, F, H, W], audio_latents [B, C_a, L, M] or None (video only: one zero
    audio token, modalities isolated so the video does not see it), sigma_* [B] in [0, 1]
    (sigma_video may be [B, F*H*W]: a level per token, 0 for clean conditioning tokens).
    Returns float32 (video [B, C, F, H, W], audio [B, C_a, L, M] or None).
    """
    from diffusers import LTX2Pipeline

    from ltx.keyframes import marker_kwargs
    from ltx.sampling import use_cross_timestep

    transformer = component(pipe_or_components, "transformer")
    cfg = transformer.config
    video_text, audio_text, mask = connect_text(component(pipe_or_components, "connectors"), text)
    batch, _, frames, height, width = video_latents.shape
    video = LTX2Pipeline._pack_latents(video_latents, cfg.patch_size, cfg.patch_size_t)
    audio, isolate = _packed_audio(audio_latents, batch, cfg.audio_in_channels, video)
    t_video = _timestep(sigma_video, batch, video)
    t_audio = _timestep(sigma_audio, batch, video)
    device, dtype = video.device, transformer.dtype
    video_out, audio_out = transformer(
        hidden_states=video.to(dtype),
        audio_hidden_states=audio.to(dtype),
        encoder_hidden_states=video_text.to(dtype),
        audio_encoder_hidden_states=audio_text.to(dtype),
        timestep=t_video,
        audio_timestep=t_audio,
        # LTX-2.3's prompt modulation reads one level per clip, as the i2v pipeline passes it
        sigma=t_video if t_video.ndim == 1 else t_video.amax(dim=1),
        audio_sigma=t_audio,
        encoder_attention_mask=mask,
        audio_encoder_attention_mask=mask,
        num_frames=frames,
        height=height,
        width=width,
        fps=fps,
        audio_num_frames=audio.shape[1],
        video_coords=transformer.rope.prepare_video_coords(
            batch, frames, height, width, device, fps=fps
        ),
        audio_coords=transformer.audio_rope.prepare_audio_coords(batch, audio.shape[1], device),
        isolate_modalities=isolate,
        use_cross_timestep=use_cross_timestep(transformer),
        return_dict=False,
        **marker_kwargs(transformer, batch, video.shape[1], height, width),
    )
    video_v = LTX2Pipeline._unpack_latents(
        video_out.float(), frames, height, width, cfg.patch_size, cfg.patch_size_t
    )
    if audio_latents is None:
        return video_v, None
    _, _, length, mel = audio_latents.shape
    return video_v, LTX2Pipeline._unpack_audio_latents(audio_out.float(), length, num_mel_bins=mel)


def _packed_audio(
    audio_latents: torch.Tensor | None, batch: int, channels: int, like: torch.Tensor
) -> tuple[torch.Tensor, bool]:
    from diffusers import LTX2Pipeline

    if audio_latents is None:
        # The transformer needs at least one audio token; isolated, it cannot reach the video.
        return like.new_zeros(batch, 1, channels), True
    return LTX2Pipeline._pack_audio_latents(audio_latents), False


def _timestep(sigma: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor:
    """[B] (one level per clip) or [B, tokens] (per token, e.g. a clean first frame) x 1000."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=like.device)
    if sigma.ndim == 2:
        return sigma * TIMESTEP_SCALE
    sigma = sigma.reshape(-1)
    return (sigma.expand(batch) if sigma.numel() == 1 else sigma) * TIMESTEP_SCALE


def noisy_latents(
    latents: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t = (1 - σ) x_0 + σ ε, target velocity ε - x_0) for latents [B, ...], sigma [B]."""
    s = sigma.reshape(-1, *([1] * (latents.ndim - 1))).to(latents)
    return (1 - s) * latents + s * noise, noise - latents
