"""Build the tiny LTX-2 (`ltx.tiny` holds its sizes): seeded components of the real diffusers
and transformers classes, the pipeline, and its diffusers folder."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ltx.tiny import (
    AUDIO_VAE_CONFIG,
    CROSS_ATTN_GAIN,
    GEMMA4_TEXT_CONFIG,
    KEYFRAME_EMBED_STD,
    SCHEDULER_CONFIG,
    TEXT_CONFIG,
    TEXT_MAX_TOKENS,
    VISION_CONFIG,
    connectors_config,
    transformer_config,
    vae_config,
    vocab_and_merges,
    vocab_size,
    vocoder_config,
)


def build_tokenizer(words: list[str] | None = None, max_tokens: int = TEXT_MAX_TOKENS) -> Any:
    """An in-memory GemmaTokenizer: any prompt tokenizes (bytes as fallback), no download.
    `words` (default: the tiny model's) each become one token."""
    from transformers import GemmaTokenizer

    vocab, merges = vocab_and_merges(words)
    return GemmaTokenizer(
        vocab=vocab, merges=merges, add_bos_token=True, model_max_length=max_tokens
    )


def _text_encoder(version: str = "2.0") -> Any:
    if version == "2.5":
        return _gemma4_text_encoder()
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = {**TEXT_CONFIG, "vocab_size": vocab_size()}
    config = Gemma3Config(text_config=text, vision_config=VISION_CONFIG, mm_tokens_per_image=4)
    return Gemma3ForConditionalGeneration(config).eval()


def _gemma4_text_encoder() -> Any:
    """2.5's text encoder: the class diffusers' LTX2Pipeline types for it, text only (LTX reads
    the prompt's hidden states; Gemma 4 Unified's vision and audio embedders are optional)."""
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    text = {**GEMMA4_TEXT_CONFIG, "vocab_size": vocab_size()}
    config = Gemma4UnifiedConfig(text_config=text, vision_config=None, audio_config=None)
    return Gemma4UnifiedForConditionalGeneration(config).eval()


def _transformer(version: str = "2.0") -> Any:
    from diffusers import LTX2VideoTransformer3DModel

    model = LTX2VideoTransformer3DModel(**transformer_config(version))
    # At random init ~118 of the 128 text tokens are the connectors' shared registers, so
    # prompts barely move the output; sharper, stronger text cross-attention makes different
    # prompts give visibly different clips (x10 the pixel difference), as a trained model does.
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("attn2"):
                module.norm_q.weight.mul_(CROSS_ATTN_GAIN)
                module.norm_k.weight.mul_(CROSS_ATTN_GAIN)
                module.to_out[0].weight.mul_(CROSS_ATTN_GAIN)
        if model.config.use_keyframes_abs_pos_embedding:  # drawn last: earlier weights unchanged
            model.keyframes_abs_pos_embedding.normal_(std=KEYFRAME_EMBED_STD)
    return model


def _vocoder(version: str = "2.0") -> Any:
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder, LTX2VocoderWithBWE

    if version == "2.0":
        return LTX2Vocoder(**vocoder_config(version))
    vocoder = LTX2VocoderWithBWE(**vocoder_config(version))
    _fill_mel_stft(vocoder.mel_stft, vocoder_config(version))
    return vocoder


def _fill_mel_stft(mel_stft: Any, cfg: dict[str, Any]) -> None:
    """Real checkpoints store the BWE's STFT and mel bases; diffusers inits them to zero, which
    would feed the extender a constant. Fill in a Hann-windowed DFT and a Slaney mel bank
    (`inverse_basis` stays zero: no forward pass reads it)."""
    from transformers.audio_utils import mel_filter_bank

    n_fft, rate = cfg["filter_length"], cfg["input_sampling_rate"]
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    angle = 2 * math.pi * freqs * torch.arange(n_fft, dtype=torch.float64) / n_fft
    window = torch.hann_window(cfg["window_length"], dtype=torch.float64)  # = filter_length
    basis = torch.cat([angle.cos(), -angle.sin()]) * window
    mel = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=cfg["num_mel_channels"],
        min_frequency=0.0,
        max_frequency=rate / 2,
        sampling_rate=rate,
        norm="slaney",
        mel_scale="slaney",
    )
    with torch.no_grad():
        mel_stft.stft_fn.forward_basis.copy_(basis[:, None, :])
        mel_stft.mel_basis.copy_(torch.from_numpy(mel.T))


def build_tiny_components(seed: int, *, version: str = "2.0") -> dict[str, Any]:
    """All LTX2Pipeline components of the tiny LTX-`version`, each initialised from its own
    seed derived from `seed`."""
    return seeded_components(
        seed,
        text_encoder=lambda: _text_encoder(version),
        transformer=lambda: _transformer(version),
        connectors=connectors_config(version),
        vae=vae_config(version),
        tokenizer=build_tokenizer(),
        vocoder=lambda: _vocoder(version),
    )


def seeded_components(
    seed: int,
    *,
    text_encoder: Callable[[], Any],
    transformer: Callable[[], Any],
    connectors: dict[str, Any],
    vae: dict[str, Any],
    tokenizer: Any,
    vocoder: Callable[[], Any] = _vocoder,
) -> dict[str, Any]:
    """Every LTX2Pipeline component: the models built in a fixed order, each from its own seed
    (`seed * 1000 + position`), the audio path and scheduler of the tiny model; the vocoder
    is the tiny 2.0 one unless given."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    builders = {
        "text_encoder": text_encoder,
        "connectors": lambda: LTX2TextConnectors(**connectors),
        "transformer": transformer,
        "vae": lambda: AutoencoderKLLTX2Video(**vae),
        "audio_vae": lambda: AutoencoderKLLTX2Audio(**AUDIO_VAE_CONFIG),
        "vocoder": vocoder,
    }
    components: dict[str, Any] = {}
    # fork_rng: building a model must not move the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        for i, (name, build) in enumerate(builders.items()):
            torch.manual_seed(seed * 1000 + i)
            components[name] = build().eval()
    components["tokenizer"] = tokenizer
    components["scheduler"] = FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)
    return components


def build_tiny_pipeline(seed: int, *, version: str = "2.0") -> Any:
    """An in-memory tiny `LTX2Pipeline` of LTX-`version` (float32, CPU)."""
    from diffusers import LTX2Pipeline

    return LTX2Pipeline(**build_tiny_components(seed, version=version))


def save_tiny_model(dest: Path, seed: int, *, version: str = "2.0") -> None:
    """Write the tiny LTX-`version` as a diffusers pipeline folder (safetensors) at `dest`."""
    build_tiny_pipeline(seed, version=version).save_pretrained(str(dest), safe_serialization=True)
