"""A tiny, seeded, randomly initialised LTX-2 built from the real diffusers classes.

It exercises every code path of the real model (Gemma-3 text side, connectors, audio-video
transformer, causal video VAE, audio VAE, vocoder) at sizes a laptop CPU runs in a second.
The sizing rules that tie the components together are written next to each config.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# Every size of the tiny model lives in this one tree: its hash names the model folder, so any
# change here builds a new model instead of silently reusing an old one.
TEXT_HIDDEN = 32
TEXT_LAYERS = 2
TEXT_MAX_TOKENS = 128  # the tokenizer's model_max_length; the pipeline pads prompts to it
VAE_LATENT_CHANNELS = 8
AUDIO_LATENT_CHANNELS = 2
AUDIO_MEL_BINS = 16
AUDIO_SAMPLE_RATE = 16000  # the audio VAE's mel rate: 16 kHz, hop 160 -> 100 mel frames/s
AUDIO_HOP = 160
VOCODER_SAMPLE_RATE = 24000  # what the vocoder writes, like the real LTX-2.0 vocoder

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
# Whole words only add ids (with merges); characters and byte fallback already cover any text.
WORDS = ["the", "and", "a", "of", "in", "on", "with", "cat", "dog", "person", "walks", "red"]


def _vocab_and_merges(
    words: list[str] | None = None,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Specials, 256 byte-fallback tokens, printable characters, and a few merged words."""
    tokens = SPECIALS + [f"<0x{i:02X}>" for i in range(256)]
    chars = ["▁", *sorted(set(string.printable.strip()) - {"\\"}), "\\"]
    tokens += [c for c in chars if c not in tokens]
    merges: list[tuple[str, str]] = []
    for word in WORDS if words is None else words:
        prev = "▁"
        for ch in word:
            merged = prev + ch
            if merged not in tokens:
                merges.append((prev, ch))
                tokens.append(merged)
            prev = merged
    return {tok: i for i, tok in enumerate(tokens)}, merges


def _vocab_size() -> int:
    n = len(_vocab_and_merges()[0])
    return (n + 63) // 64 * 64  # round up: embedding rows past the vocab are never indexed


TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": None,  # filled from the tokenizer by tiny_spec()
    "hidden_size": TEXT_HIDDEN,
    "intermediate_size": 64,
    "num_hidden_layers": TEXT_LAYERS,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "query_pre_attn_scalar": 16,
    "max_position_embeddings": 512,
    "sliding_window": 64,
}
VISION_CONFIG: dict[str, Any] = {  # never run; Gemma3ForConditionalGeneration needs one
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 28,
    "patch_size": 14,
}
CONNECTORS_CONFIG: dict[str, Any] = {
    "caption_channels": TEXT_HIDDEN,  # = Gemma hidden size
    "text_proj_in_factor": TEXT_LAYERS + 1,  # all hidden states: embeddings + each layer
    "video_connector_num_attention_heads": 2,
    "video_connector_attention_head_dim": TEXT_HIDDEN // 2,  # inner dim = caption_channels
    "video_connector_num_layers": 1,
    "video_connector_num_learnable_registers": 16,  # must divide TEXT_MAX_TOKENS
    "audio_connector_num_attention_heads": 2,
    "audio_connector_attention_head_dim": TEXT_HIDDEN // 2,
    "audio_connector_num_layers": 1,
    "audio_connector_num_learnable_registers": 16,
    "connector_rope_base_seq_len": TEXT_MAX_TOKENS,
    "rope_type": "split",
}
TRANSFORMER_CONFIG: dict[str, Any] = {
    "in_channels": VAE_LATENT_CHANNELS,  # x patch^3, with patch 1
    "out_channels": VAE_LATENT_CHANNELS,
    "patch_size": 1,
    "patch_size_t": 1,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 16,  # = video inner dim (heads x head_dim)
    "vae_scale_factors": (2, 8, 8),  # = the video VAE's (temporal, spatial, spatial) ratios
    "audio_in_channels": AUDIO_LATENT_CHANNELS * AUDIO_MEL_BINS // 4,
    "audio_out_channels": AUDIO_LATENT_CHANNELS * AUDIO_MEL_BINS // 4,
    "audio_num_attention_heads": 2,
    "audio_attention_head_dim": 4,
    "audio_cross_attention_dim": 8,  # = audio inner dim
    "audio_sampling_rate": AUDIO_SAMPLE_RATE,
    "audio_hop_length": AUDIO_HOP,
    "num_layers": 2,
    "caption_channels": TEXT_HIDDEN,
    "rope_type": "split",  # what the real LTX-2.0 checkpoint uses
}
# The recipe from FIELD-NOTES: patch 4 and one spatio-temporal down/up block (x8 space, x2 time)
# round-trips 9x64x64 -> 8x5x8x8 -> 9x64x64, which diffusers' own test VAE does not.
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": VAE_LATENT_CHANNELS,
    "block_out_channels": (16,),
    "decoder_block_out_channels": (16,),
    "layers_per_block": (1, 1),
    "decoder_layers_per_block": (1, 1),
    "spatio_temporal_scaling": (True,),
    "decoder_spatio_temporal_scaling": (True,),
    "decoder_inject_noise": (False, False),
    "downsample_type": ("spatiotemporal",),
    "upsample_type": ("spatiotemporal",),
    "upsample_residual": (True,),
    "upsample_factor": (2,),
    "timestep_conditioning": False,
    "patch_size": 4,
    "patch_size_t": 1,
    "encoder_causal": True,
    "decoder_causal": False,
    "spatial_compression_ratio": 8,
    "temporal_compression_ratio": 2,
}
AUDIO_VAE_CONFIG: dict[str, Any] = {
    # latents_mean/std have base_channels entries and normalise packed [B, L, C*M] latents,
    # so base_channels must equal latent_channels * mel_bins / 4.
    "base_channels": AUDIO_LATENT_CHANNELS * AUDIO_MEL_BINS // 4,
    "output_channels": 2,
    "ch_mult": (1, 1, 1),  # three levels: the x4 time/mel compression is hard-coded in diffusers
    "num_res_blocks": 1,
    "in_channels": 2,
    "resolution": 32,
    "latent_channels": AUDIO_LATENT_CHANNELS,
    "norm_type": "pixel",
    "causality_axis": "height",
    "sample_rate": AUDIO_SAMPLE_RATE,
    "mel_hop_length": AUDIO_HOP,
    "mel_bins": AUDIO_MEL_BINS,
}
VOCODER_CONFIG: dict[str, Any] = {
    "in_channels": 2 * AUDIO_MEL_BINS,  # stereo mel channels x mel bins, flattened
    "hidden_channels": 32,
    "out_channels": 2,
    "upsample_kernel_sizes": [12, 10, 16],
    "upsample_factors": [6, 5, 8],  # 240 samples per mel frame: 100 frames/s -> 24 kHz
    "resnet_kernel_sizes": [3],
    "resnet_dilations": [[1]],
    "output_sampling_rate": VOCODER_SAMPLE_RATE,
}
SCHEDULER_CONFIG: dict[str, Any] = {  # the LTX-2 flow-matching schedule
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
    "time_shift_type": "exponential",
}
CROSS_ATTN_GAIN = 3.0  # text cross-attention sharpening at init (see _transformer)
FORMAT_VERSION = 1  # bump when the build changes in a way the configs above do not show


def tiny_spec() -> dict[str, Any]:
    """Every setting that determines the tiny model's weights, as a JSON-able tree."""
    vocab, _ = _vocab_and_merges()
    text = {**TEXT_CONFIG, "vocab_size": _vocab_size()}
    return {
        "format": FORMAT_VERSION,
        "text_encoder": {"text": text, "vision": VISION_CONFIG},
        "tokenizer": {"vocab": len(vocab), "words": WORDS, "max_tokens": TEXT_MAX_TOKENS},
        "connectors": CONNECTORS_CONFIG,
        "transformer": {
            k: list(v) if isinstance(v, tuple) else v for k, v in TRANSFORMER_CONFIG.items()
        },
        "vae": {k: list(v) if isinstance(v, tuple) else v for k, v in VAE_CONFIG.items()},
        "audio_vae": {
            k: list(v) if isinstance(v, tuple) else v for k, v in AUDIO_VAE_CONFIG.items()
        },
        "vocoder": VOCODER_CONFIG,
        "scheduler": SCHEDULER_CONFIG,
        "cross_attn_gain": CROSS_ATTN_GAIN,
    }


def build_tokenizer(words: list[str] | None = None, max_tokens: int = TEXT_MAX_TOKENS) -> Any:
    """An in-memory GemmaTokenizer: any prompt tokenizes (bytes as fallback), no download.
    `words` (default: the tiny model's) each become one token."""
    from transformers import GemmaTokenizer

    vocab, merges = _vocab_and_merges(words)
    return GemmaTokenizer(
        vocab=vocab, merges=merges, add_bos_token=True, model_max_length=max_tokens
    )


def _text_encoder() -> Any:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = {**TEXT_CONFIG, "vocab_size": _vocab_size()}
    config = Gemma3Config(text_config=text, vision_config=VISION_CONFIG, mm_tokens_per_image=4)
    return Gemma3ForConditionalGeneration(config).eval()


def _transformer() -> Any:
    from diffusers import LTX2VideoTransformer3DModel

    model = LTX2VideoTransformer3DModel(**TRANSFORMER_CONFIG)
    # At random init ~118 of the 128 text tokens are the connectors' shared registers, so
    # prompts barely move the output; sharper, stronger text cross-attention makes different
    # prompts give visibly different clips (x10 the pixel difference), as a trained model does.
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("attn2"):
                module.norm_q.weight.mul_(CROSS_ATTN_GAIN)
                module.norm_k.weight.mul_(CROSS_ATTN_GAIN)
                module.to_out[0].weight.mul_(CROSS_ATTN_GAIN)
    return model


def build_tiny_components(seed: int) -> dict[str, Any]:
    """All LTX2Pipeline components, each initialised from its own seed derived from `seed`."""
    return seeded_components(
        seed,
        text_encoder=_text_encoder,
        transformer=_transformer,
        connectors=CONNECTORS_CONFIG,
        vae=VAE_CONFIG,
        tokenizer=build_tokenizer(),
    )


def seeded_components(
    seed: int,
    *,
    text_encoder: Callable[[], Any],
    transformer: Callable[[], Any],
    connectors: dict[str, Any],
    vae: dict[str, Any],
    tokenizer: Any,
) -> dict[str, Any]:
    """Every LTX2Pipeline component: the models built in a fixed order, each from its own seed
    (`seed * 1000 + position`), the audio path, scheduler and vocoder of the tiny model."""
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
    )
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    builders = {
        "text_encoder": text_encoder,
        "connectors": lambda: LTX2TextConnectors(**connectors),
        "transformer": transformer,
        "vae": lambda: AutoencoderKLLTX2Video(**vae),
        "audio_vae": lambda: AutoencoderKLLTX2Audio(**AUDIO_VAE_CONFIG),
        "vocoder": lambda: LTX2Vocoder(**VOCODER_CONFIG),
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


def build_tiny_pipeline(seed: int) -> Any:
    """An in-memory tiny `LTX2Pipeline` (float32, CPU)."""
    from diffusers import LTX2Pipeline

    return LTX2Pipeline(**build_tiny_components(seed))


def save_tiny_model(dest: Path, seed: int) -> None:
    """Write the tiny model as a diffusers pipeline folder (safetensors) at `dest`."""
    build_tiny_pipeline(seed).save_pretrained(str(dest), safe_serialization=True)
