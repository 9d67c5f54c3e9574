"""A tiny, seeded, randomly initialised LTX-2 built from the real diffusers classes.

It exercises every code path of the real model (Gemma text side, connectors, audio-video
transformer, causal video VAE, audio VAE, vocoder) at sizes a laptop CPU runs in a second.
The sizing rules that tie the components together are written next to each config.
`version` ("2.0", "2.3", "2.5") picks the architecture of that release: a later version is the
2.0 configs plus small delta dicts, each as diffusers' `scripts/convert_ltx2_to_diffusers.py`
configures the real checkpoint (the function that holds it is named next to each delta).
"""

from __future__ import annotations

import string
from typing import Any

from ltx.versions import SCHEDULER

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
BWE_SAMPLE_RATE = 48000  # what the 2.3+ vocoder (bandwidth extension) writes, like the real one
GEMMA4_HIDDEN = 48  # 2.5's Gemma 4 differs from the Gemma 3 so that the sizing rules show
GEMMA4_LAYERS = 3
VERSIONS = ("2.0", "2.3", "2.5")

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
# Whole words only add ids (with merges); characters and byte fallback already cover any text.
WORDS = ["the", "and", "a", "of", "in", "on", "with", "cat", "dog", "person", "walks", "red"]


def vocab_and_merges(
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


def vocab_size() -> int:
    n = len(vocab_and_merges()[0])
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
# get_ltx2_connectors_config("2.5") has no fixed text encoder: its sizes follow the Gemma 4 config.
GEMMA4_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": None,  # filled from the tokenizer by tiny_spec()
    "hidden_size": GEMMA4_HIDDEN,
    "intermediate_size": 64,
    "num_hidden_layers": GEMMA4_LAYERS,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "global_head_dim": 32,  # full-attention layers get wider heads, as in the real Gemma 4
    "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
    "max_position_embeddings": 512,
    "sliding_window": 64,
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
# get_ltx2_connectors_config("2.3"): one text projection per modality, straight to the
# transformer's inner dims (it has no caption projection), and gated attention.
CONNECTORS_2_3: dict[str, Any] = {
    "per_modality_projections": True,
    "video_hidden_dim": 16,  # = transformer video inner dim (heads x head_dim)
    "audio_hidden_dim": 8,  # = transformer audio inner dim
    "video_connector_attention_head_dim": 8,  # connector inner dims = the hidden dims above
    "audio_connector_attention_head_dim": 4,
    "proj_bias": True,
    "video_gated_attn": True,
    "audio_gated_attn": True,
}
# get_ltx2_connectors_config("2.5"): 2.3's, fed by Gemma 4.
CONNECTORS_2_5: dict[str, Any] = {
    "caption_channels": GEMMA4_HIDDEN,
    "text_proj_in_factor": GEMMA4_LAYERS + 1,
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
# get_ltx2_transformer_config("2.3"): gated attention, prompt (cross-attention) modulation,
# perturbed self-attention for STG; text comes from the connectors' per-modality projections.
TRANSFORMER_2_3: dict[str, Any] = {
    "gated_attn": True,
    "cross_attn_mod": True,
    "audio_gated_attn": True,
    "audio_cross_attn_mod": True,
    "use_prompt_embeddings": False,
    "perturbed_attn": True,
}
# get_ltx2_transformer_config("2.5"): 2.3 plus a bias-free video FF and the keyframe embedding.
TRANSFORMER_2_5: dict[str, Any] = {
    "ff_bias": False,
    "use_keyframes_abs_pos_embedding": True,
    "caption_channels": GEMMA4_HIDDEN,  # unused without prompt embeddings; kept truthful
}
KEYFRAME_EMBED_STD = 0.02  # 2.5's keyframe embedding is zero at init: make it visible to tests
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
# get_ltx2_video_vae_config("2.3") (2.5: the same): a decoder of separate temporal and spatial
# up blocks without residuals, zero padding. The tiny one is the real decoder's last two
# blocks, ("temporal", "spatial"), so it still decodes x2 time, x8 space (patch 4 x 2):
# 9x64x64 -> 8x5x8x8 -> 9x64x64. Channels 16 -> 8 -> 4: each block halves (upsample_factor 2).
VAE_2_3: dict[str, Any] = {
    "decoder_block_out_channels": (8, 16),
    "decoder_layers_per_block": (1, 1, 1),
    "decoder_spatio_temporal_scaling": (True, True),
    "decoder_inject_noise": (False, False, False),
    "upsample_type": ("temporal", "spatial"),  # in decoding order (diffusers does not reverse it)
    "upsample_residual": (False, False),
    "upsample_factor": (2, 2),
    "decoder_spatial_padding_mode": "zeros",
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
# get_ltx2_vocoder_config("2.3") (2.5: the same): LTX2VocoderWithBWE. A snakebeta, antialiased
# vocoder writes 16 kHz from the mel; a causal mel STFT of that (hop 80: 200 frames/s) feeds a
# bandwidth extender whose residual lands on the x3 resampled wave: 48 kHz.
VOCODER_BWE_CONFIG: dict[str, Any] = {
    "in_channels": 2 * AUDIO_MEL_BINS,
    "hidden_channels": 32,
    "out_channels": 2,
    "upsample_kernel_sizes": [11, 8, 16],
    "upsample_factors": [5, 4, 8],  # 160 samples per mel frame: 100 frames/s -> 16 kHz
    "resnet_kernel_sizes": [3],
    "resnet_dilations": [[1]],
    "act_fn": "snakebeta",
    "antialias": True,
    "antialias_ratio": 2,
    "antialias_kernel_size": 12,
    "final_act_fn": None,
    "final_bias": False,
    "bwe_in_channels": 2 * AUDIO_MEL_BINS,  # stereo x num_mel_channels
    "bwe_hidden_channels": 32,
    "bwe_out_channels": 2,
    "bwe_upsample_kernel_sizes": [12, 11, 16],
    "bwe_upsample_factors": [6, 5, 8],  # 240 samples per STFT frame: 200 frames/s -> 48 kHz
    "bwe_resnet_kernel_sizes": [3],
    "bwe_resnet_dilations": [[1]],
    "bwe_act_fn": "snakebeta",
    "bwe_antialias": True,
    "bwe_antialias_ratio": 2,
    "bwe_antialias_kernel_size": 12,
    "bwe_final_act_fn": None,
    "bwe_final_bias": False,
    "filter_length": 128,
    "hop_length": 80,  # divides the 160 samples per mel frame: no padding path
    "window_length": 128,
    "num_mel_channels": AUDIO_MEL_BINS,
    "input_sampling_rate": AUDIO_SAMPLE_RATE,
    "output_sampling_rate": BWE_SAMPLE_RATE,  # a whole multiple of the input rate: x3
}
# the LTX-2 flow-matching schedule, as every version's model folder carries it
SCHEDULER_CONFIG: dict[str, Any] = {k: v for k, v in SCHEDULER.items() if k != "_class_name"}
CROSS_ATTN_GAIN = 3.0  # text cross-attention sharpening at init (see _transformer)
FORMAT_VERSION = 1  # bump when the build changes in a way the configs above do not show


def tiny_spec(*, version: str = "2.0") -> dict[str, Any]:
    """Every setting that determines the tiny model's weights, as a JSON-able tree."""
    vocab, _ = vocab_and_merges()
    spec = {
        "format": FORMAT_VERSION,
        "text_encoder": _text_encoder_spec(version),
        "tokenizer": {"vocab": len(vocab), "words": WORDS, "max_tokens": TEXT_MAX_TOKENS},
        "connectors": connectors_config(version),
        "transformer": _jsonable(transformer_config(version)),
        "vae": _jsonable(vae_config(version)),
        "audio_vae": _jsonable(AUDIO_VAE_CONFIG),
        "vocoder": vocoder_config(version),
        "scheduler": SCHEDULER_CONFIG,
        "cross_attn_gain": CROSS_ATTN_GAIN,
    }
    if version != "2.0":  # 2.0's spec predates versions: adding one would rename its folder
        spec["version"] = version
    if transformer_config(version).get("use_keyframes_abs_pos_embedding"):
        spec["keyframe_embed_std"] = KEYFRAME_EMBED_STD
    return spec


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def _version_index(version: str) -> int:
    if version not in VERSIONS:
        raise ValueError(f"unknown LTX version {version!r}: the tiny model has {VERSIONS}")
    return VERSIONS.index(version)


def _versioned(version: str, base: dict[str, Any], *deltas: dict[str, Any]) -> dict[str, Any]:
    """`base` (2.0) updated by the delta of each later version up to `version`, in order."""
    return {k: v for d in (base, *deltas[: _version_index(version)]) for k, v in d.items()}


def connectors_config(version: str = "2.0") -> dict[str, Any]:
    """`LTX2TextConnectors` kwargs of the tiny model of `version`."""
    return _versioned(version, CONNECTORS_CONFIG, CONNECTORS_2_3, CONNECTORS_2_5)


def transformer_config(version: str = "2.0") -> dict[str, Any]:
    """`LTX2VideoTransformer3DModel` kwargs of the tiny model of `version`."""
    return _versioned(version, TRANSFORMER_CONFIG, TRANSFORMER_2_3, TRANSFORMER_2_5)


def vae_config(version: str = "2.0") -> dict[str, Any]:
    """`AutoencoderKLLTX2Video` kwargs of the tiny model of `version`."""
    return _versioned(version, VAE_CONFIG, VAE_2_3)


def vocoder_config(version: str = "2.0") -> dict[str, Any]:
    """`LTX2Vocoder` (2.0) or `LTX2VocoderWithBWE` (2.3, 2.5) kwargs of `version`."""
    return VOCODER_CONFIG if _version_index(version) == 0 else VOCODER_BWE_CONFIG


def _text_encoder_spec(version: str) -> dict[str, Any]:
    if version == "2.5":
        return {"gemma4_unified": {**GEMMA4_TEXT_CONFIG, "vocab_size": vocab_size()}}
    return {"text": {**TEXT_CONFIG, "vocab_size": vocab_size()}, "vision": VISION_CONFIG}
