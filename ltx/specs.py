"""The sizes of each supported LTX-2 model that decide what a cache sample holds, and the bytes
one sample takes. Real sizes are those of diffusers' `scripts/convert_ltx2_to_diffusers.py`
(LTX-2.0) and the LTX-2.3 connector settings (per-modality text projections)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ltx import tiny
from ltx.versions import VERSIONS

AUDIO_LATENTS_PER_SECOND = 25  # 16 kHz mel, hop 160, x4 time compression


@dataclass(frozen=True)
class ModelSpec:
    """What the latent and text caches of one model version look like."""

    name: str
    latent_channels: int  # video VAE
    spatial: int  # video VAE compression (x32 for the real model)
    temporal: int  # (x8)
    audio_latent_channels: int
    audio_mel_bins: int  # audio VAE input mel bins; latents keep mel_bins / 4
    text_tokens: int  # prompts padded to this many tokens
    text_dims: tuple[int, ...]  # one cached feature per entry: (video,) or (video, audio)
    gemma_hidden: int  # Gemma-3 hidden size
    text_layers: int  # Gemma hidden states stacked (layers + 1): what caching avoids

    def video_latent_shape(self, frames: int, height: int, width: int) -> tuple[int, ...]:
        """[C, F', H', W'] of a frames x height x width clip (frames = temporal*k + 1)."""
        f = (frames - 1) // self.temporal + 1
        return (self.latent_channels, f, height // self.spatial, width // self.spatial)

    def audio_latent_shape(self, frames: int, fps: float) -> tuple[int, ...]:
        """[C, L, M'] for the clip's duration."""
        length = round(frames / fps * AUDIO_LATENTS_PER_SECOND)
        return (self.audio_latent_channels, length, self.audio_mel_bins // 4)


LTX_2_0 = ModelSpec("ltx-2.0", 128, 32, 8, 8, 64, 1024, (3840,), 3840, 49)
# LTX-2.3: per-modality text projections (video 4096, audio 2048), the same VAEs.
LTX_2_3 = ModelSpec("ltx-2.3", 128, 32, 8, 8, 64, 1024, (4096, 2048), 3840, 49)
TINY = ModelSpec(
    "tiny",
    tiny.VAE_LATENT_CHANNELS,
    tiny.VAE_CONFIG["spatial_compression_ratio"],
    tiny.VAE_CONFIG["temporal_compression_ratio"],
    tiny.AUDIO_LATENT_CHANNELS,
    tiny.AUDIO_MEL_BINS,
    tiny.TEXT_MAX_TOKENS,
    (tiny.TEXT_HIDDEN,),
    tiny.TEXT_HIDDEN,
    tiny.TEXT_LAYERS + 1,
)
SPECS = {"2.0": LTX_2_0, "2.3": LTX_2_3, "tiny": TINY}


def spec_for_source(source: str) -> ModelSpec:
    """The cache sizes of a `model.source`: the tiny model's, a packaged base's (`ltx.bases`),
    or the real model's (2.0 and 2.3 cache the same video and audio latents)."""
    if source == "tiny":
        return TINY
    from ltx import bases

    if source in bases.names():
        return bases.packaged_base(source).spec
    return LTX_2_0


# The real LTX-2.0 video VAE config (diffusers conversion script): bucket rules come from it.
LTX_2_0_VAE_CONFIG: dict[str, Any] = VERSIONS["2.0"].configs["vae"]


# Tokens of a typical caption (BOS included): the captioner generates at most 48 tokens
# (curation `max_new_tokens`) and curation flags captions over 120 words (~160 Gemma tokens at
# ~1.3 a word), so 128 covers generated captions and most hand-written ones.
TYPICAL_CAPTION_TOKENS = 128


def cache_bytes(
    spec: ModelSpec,
    frames: int,
    height: int,
    width: int,
    fps: float,
    value_bytes: int = 2,
    text_tokens: int | None = TYPICAL_CAPTION_TOKENS,
) -> dict[str, int]:
    """Bytes of one cached sample's tensors (bf16 values by default) for a caption of
    `text_tokens` tokens (None: one that fills all `spec.text_tokens`). A shard keeps the
    attended tokens' features, one padding row per feature and the padded length (int64);
    `text_padded` is what the padded layout (cache format 2: features and int64 mask) took."""
    tokens = spec.text_tokens if text_tokens is None else min(text_tokens, spec.text_tokens)
    width_sum = sum(spec.text_dims)  # one row of every cached text feature
    out = {
        "video": _prod(spec.video_latent_shape(frames, height, width)) * value_bytes,
        "audio": _prod(spec.audio_latent_shape(frames, fps)) * value_bytes,
        "text": tokens * width_sum * value_bytes,
        "text_padding": width_sum * value_bytes,
        "text_length": 8,
    }
    out["total"] = sum(out.values())
    out["text_padded"] = spec.text_tokens * (width_sum * value_bytes + 8)
    gemma = spec.text_tokens * spec.gemma_hidden * spec.text_layers * value_bytes
    out["stacked_gemma_instead"] = gemma  # what caching the raw text-encoder output would take
    return out


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
