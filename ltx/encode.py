"""Encode prompts, video frames and audio into the spaces `LTX2Pipeline`'s denoiser works in,
so that cached training inputs match inference exactly.

Text: Gemma-3 hidden states, stacked and normalised, then the connectors' input projection
(`text_proj_in`) — the frozen, cacheable half of `LTX2TextConnectors.forward`. The connector
transformers (the other half, LoRA-targetable in diffusers) run in `ltx.forward.connect_text`.
Caching the projection ([B, T, 3840] for LTX-2.0) instead of the stacked Gemma states
([B, T, 3840 * 49]) makes the text cache 49x smaller.

Video: pixels in [-1, 1] -> `vae.encode(...).latent_dist.mode()` -> the pipeline's
`_normalize_latents` (the inverse of what it does before `vae.decode`).

Audio (diffusers ships only the decode path): the LTX-2 audio processor of the official
`ltx-core` — resample to the audio VAE's rate (16 kHz) with a Hann-windowed sinc, a magnitude
STFT (n_fft = win = 1024, hop = `mel_hop_length`, centred, reflect padding), a Slaney mel
filterbank (Slaney norm, 0 Hz .. rate/2, `mel_bins` bands), `log(clamp(mel, 1e-5))` — then
`audio_vae.encode(...).latent_dist.mode()` and the pipeline's audio normalisation, which acts
on packed [B, L, C*M] latents.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ltx.loading import component
from stagekit.errors import UserError

MEL_N_FFT = 1024  # LTX-2's audio processor: n_fft = win_length = 1024 at 16 kHz
MEL_LOG_FLOOR = 1e-5
PROMPT_BATCH = 4  # stacked Gemma-12B states of 4 prompts are ~1.5 GB in bf16


# ---------------------------------------------------------------------------------------- text


@torch.no_grad()
def encode_prompts(
    pipe_or_components: Any, prompts: list[str], max_sequence_length: int | None = None
) -> dict[str, torch.Tensor]:
    """Prompts -> {"prompt_features" [B, T, D], "prompt_attention_mask" [B, T] (int64),
    and for LTX-2.3+ "audio_prompt_features" [B, T, D_a]}; T = `text_max_length`."""
    from ltx.sampling import text_max_length

    tokenizer = component(pipe_or_components, "tokenizer")
    length = max_sequence_length or text_max_length(tokenizer)
    chunks = [
        _encode_prompt_batch(pipe_or_components, prompts[i : i + PROMPT_BATCH], length)
        for i in range(0, len(prompts), PROMPT_BATCH)
    ]
    return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}


def _encode_prompt_batch(parts: Any, prompts: list[str], length: int) -> dict[str, torch.Tensor]:
    embeds, mask = gemma_prompt_embeds(parts, prompts, length)
    return project_text(component(parts, "connectors"), embeds, mask)


def gemma_prompt_embeds(
    parts: Any, prompts: list[str], length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacked Gemma hidden states [B, T, hidden * (layers + 1)] and mask [B, T], exactly as
    `LTX2Pipeline._get_gemma_prompt_embeds` computes them."""
    tokenizer, text_encoder = component(parts, "tokenizer"), component(parts, "text_encoder")
    tokenizer.padding_side = "left"  # Gemma: left padding, as the pipeline sets it
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = text_encoder.device
    inputs = tokenizer(
        [p.strip() for p in prompts],
        padding="max_length",
        max_length=length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
    out = text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    embeds = torch.stack(out.hidden_states, dim=-1).flatten(2, 3).to(text_encoder.dtype)
    return embeds, mask


def project_text(
    connectors: Any, embeds: torch.Tensor, mask: torch.Tensor, padding_side: str = "left"
) -> dict[str, torch.Tensor]:
    """The first half of `LTX2TextConnectors.forward`: normalise and project the stacked
    states. Returns the dict `encode_prompts` documents."""
    from diffusers.pipelines.ltx2.connectors import per_layer_masked_mean_norm, per_token_rms_norm

    cfg = connectors.config
    states = embeds.unflatten(2, (cfg.caption_channels, -1))  # [B, T, D, layers + 1]
    out = {"prompt_attention_mask": mask.to(torch.int64)}
    if cfg.per_modality_projections:  # LTX-2.3
        norm = per_token_rms_norm(states).flatten(2, 3)
        norm = torch.where(mask.bool().unsqueeze(-1), norm, torch.zeros_like(norm))
        video_scale = math.sqrt(cfg.video_hidden_dim / cfg.caption_channels)
        audio_scale = math.sqrt(cfg.audio_hidden_dim / cfg.caption_channels)
        out["prompt_features"] = connectors.video_text_proj_in(norm * video_scale)
        out["audio_prompt_features"] = connectors.audio_text_proj_in(norm * audio_scale)
        return out
    norm = per_layer_masked_mean_norm(
        states, mask.sum(dim=-1), device=states.device, padding_side=padding_side
    )
    out["prompt_features"] = connectors.text_proj_in(norm)
    return out


# --------------------------------------------------------------------------------------- video


@torch.no_grad()
def encode_video(
    vae: Any, frames: np.ndarray | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 frames [F, H, W, 3] -> normalised latents [C, F', H', W'] (the denoiser's space).
    With `generator`, samples the posterior instead of taking its mean."""
    from diffusers import LTX2Pipeline

    pixels = torch.as_tensor(np.asarray(frames))
    _check_video(vae, pixels)
    x = pixels.permute(3, 0, 1, 2)[None].to(vae.device, vae.dtype) / 127.5 - 1.0  # [1,3,F,H,W]
    dist = vae.encode(x).latent_dist
    z = dist.sample(generator) if generator is not None else dist.mode()
    z = LTX2Pipeline._normalize_latents(
        z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor
    )
    return z[0]


def _check_video(vae: Any, pixels: torch.Tensor) -> None:
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != torch.uint8:
        raise UserError(
            f"video must be uint8 [F, H, W, 3], got {pixels.dtype} {list(pixels.shape)}"
        )
    frames, height, width, _ = pixels.shape
    s, t = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    if (frames - 1) % t or height % s or width % s:
        raise UserError(
            f"clip {width}x{height}x{frames} does not fit the VAE: frames must be {t}k+1 and "
            f"sides multiples of {s}; bucket the clip first (ltx.buckets)"
        )


def denormalize_video(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Inverse of `encode_video`'s normalisation ([..., C, F, H, W] -> what vae.decode takes)."""
    from diffusers import LTX2Pipeline

    batch = latents if latents.ndim == 5 else latents[None]
    out = LTX2Pipeline._denormalize_latents(
        batch, vae.latents_mean, vae.latents_std, vae.config.scaling_factor
    )
    return out if latents.ndim == 5 else out[0]


@torch.no_grad()
def decode_frames(vae: Any, latents: torch.Tensor) -> np.ndarray:
    """Normalised latents [C, F, H, W] -> the uint8 frames [F', H*s, W*s, 3] the VAE decodes
    them to (clean latents: decode timestep 0 where the decoder is conditioned)."""
    z = denormalize_video(vae, latents)[None].to(vae.device, vae.dtype)
    timestep = torch.zeros(1, device=vae.device) if vae.config.timestep_conditioning else None
    pixels = vae.decode(z, timestep, return_dict=False)[0][0]  # [3, F', H, W] in [-1, 1]
    frames = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


def decode_image(vae: Any, latent: torch.Tensor) -> np.ndarray:
    """One normalised latent frame [C, 1, H, W] -> the uint8 image [H*s, W*s, 3]."""
    return decode_frames(vae, latent)[0]


# --------------------------------------------------------------------------------------- audio


@torch.no_grad()
def encode_audio(
    audio_vae: Any,
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """float waveform [channels, samples] -> normalised latents [C, L, M'] (L = 25 per second
    for LTX-2); packing them gives the pipeline's audio latents [L, C*M']."""
    mel = waveform_to_mel(audio_vae, waveform, sample_rate)  # [1, ch, T, mel_bins]
    dist = audio_vae.encode(mel.to(audio_vae.device, audio_vae.dtype)).latent_dist
    z = dist.sample(generator) if generator is not None else dist.mode()  # [1, C, L, M']
    return normalize_audio(audio_vae, z)[0]


def normalize_audio(audio_vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Raw audio VAE latents [B, C, L, M] -> the pipeline's normalised space, same shape."""
    from diffusers import LTX2Pipeline

    _, _, length, mel = latents.shape
    packed = LTX2Pipeline._pack_audio_latents(latents)
    packed = LTX2Pipeline._normalize_audio_latents(
        packed, audio_vae.latents_mean, audio_vae.latents_std
    )
    return LTX2Pipeline._unpack_audio_latents(packed, length, num_mel_bins=mel)


def waveform_to_mel(
    audio_vae: Any, waveform: np.ndarray | torch.Tensor, sample_rate: int
) -> torch.Tensor:
    """[channels, samples] at `sample_rate` -> log-mel [1, in_channels, frames, mel_bins]."""
    cfg = audio_vae.config
    wave = torch.as_tensor(np.asarray(waveform), dtype=torch.float32)
    if wave.ndim == 1:
        wave = wave[None]
    wave = _match_channels(wave, cfg.in_channels)
    wave = resample(wave, int(sample_rate), int(cfg.sample_rate))
    return log_mel(wave, cfg.sample_rate, cfg.mel_hop_length, cfg.mel_bins)[None]


def _match_channels(wave: torch.Tensor, channels: int) -> torch.Tensor:
    # Mono is duplicated to stereo; surround keeps its first (front left/right) channels.
    if wave.shape[0] == channels:
        return wave
    if wave.shape[0] == 1:
        return wave.expand(channels, -1)
    if wave.shape[0] > channels:
        return wave[:channels]
    return wave.mean(dim=0, keepdim=True).expand(channels, -1)


def log_mel(wave: torch.Tensor, sample_rate: int, hop: int, mel_bins: int) -> torch.Tensor:
    """[channels, samples] -> log(clamp(Slaney mel magnitude, 1e-5)) [channels, frames, mels]."""
    window = torch.hann_window(MEL_N_FFT, dtype=torch.float64)
    spec = torch.stft(
        wave.double(),
        n_fft=MEL_N_FFT,
        hop_length=hop,
        win_length=MEL_N_FFT,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    ).abs()  # [channels, n_fft/2+1, frames]
    fb = mel_filterbank(MEL_N_FFT // 2 + 1, sample_rate, mel_bins)  # [freqs, mels]
    mel = torch.matmul(spec.transpose(1, 2), fb)
    return torch.log(torch.clamp(mel, min=MEL_LOG_FLOOR)).float()


def mel_filterbank(n_freqs: int, sample_rate: int, n_mels: int) -> torch.Tensor:
    """Slaney-scale, Slaney-normalised triangular filters [n_freqs, n_mels], 0 .. rate/2
    (torchaudio `melscale_fbanks(norm="slaney", mel_scale="slaney")`, librosa's default)."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2)
    f_pts = torch.tensor([_mel_to_hz(float(m)) for m in m_pts], dtype=torch.float64)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    return fb * (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels]))[None, :]


_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz, logarithmic above
_MIN_LOG_HZ = 1000.0
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(freq: float) -> float:
    if freq < _MIN_LOG_HZ:
        return freq / _F_SP
    return _MIN_LOG_HZ / _F_SP + math.log(freq / _MIN_LOG_HZ) / _LOGSTEP


def _mel_to_hz(mel: float) -> float:
    min_log_mel = _MIN_LOG_HZ / _F_SP
    if mel < min_log_mel:
        return mel * _F_SP
    return _MIN_LOG_HZ * math.exp(_LOGSTEP * (mel - min_log_mel))


def resample(wave: torch.Tensor, orig: int, new: int, width_zeros: int = 6) -> torch.Tensor:
    """Band-limited resampling [channels, n] -> [channels, ceil(n * new / orig)] with a
    Hann-windowed sinc (torchaudio's `sinc_interp_hann`, rolloff 0.99)."""
    if orig == new:
        return wave
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    kernel, width = _sinc_kernel(orig, new, width_zeros, wave.dtype)
    padded = F.pad(wave[:, None], (width, width + orig))
    out = F.conv1d(padded, kernel, stride=orig)  # [channels, new, n / orig]
    out = out.transpose(1, 2).reshape(wave.shape[0], -1)
    return out[:, : math.ceil(new * wave.shape[-1] / orig)]


def _sinc_kernel(orig: int, new: int, zeros: int, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    base = min(orig, new) * 0.99  # cut just below the lower Nyquist rate
    width = math.ceil(zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    t = (t * base).clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * window * base / orig).to(dtype), width
