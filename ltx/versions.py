"""What each supported LTX-2 version is: the one place that knows 2.0, 2.3 and 2.5.

Full-size diffusers configs are those of diffusers' `scripts/convert_ltx2_to_diffusers.py`
(`get_ltx2_*_config(version)`); the official file layouts are Lightricks' (single file for 2.0
and 2.3; one file per component, in ComfyUI's folders, for 2.5). Everything that differs between
versions is a field here, so the loaders, the trainer and the sampler ask instead of guessing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from stagekit.errors import UserError

SUPPORTED = ("2.0", "2.3", "2.5")

_TRANSFORMER_2_0: dict[str, Any] = {
    "in_channels": 128,
    "out_channels": 128,
    "patch_size": 1,
    "patch_size_t": 1,
    "num_attention_heads": 32,
    "attention_head_dim": 128,
    "cross_attention_dim": 4096,
    "vae_scale_factors": [8, 32, 32],
    "pos_embed_max_pos": 20,
    "base_height": 2048,
    "base_width": 2048,
    "gated_attn": False,
    "cross_attn_mod": False,
    "audio_in_channels": 128,
    "audio_out_channels": 128,
    "audio_patch_size": 1,
    "audio_patch_size_t": 1,
    "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64,
    "audio_cross_attention_dim": 2048,
    "audio_scale_factor": 4,
    "audio_pos_embed_max_pos": 20,
    "audio_sampling_rate": 16000,
    "audio_hop_length": 160,
    "audio_gated_attn": False,
    "audio_cross_attn_mod": False,
    "num_layers": 48,
    "activation_fn": "gelu-approximate",
    "qk_norm": "rms_norm_across_heads",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "caption_channels": 3840,
    "attention_bias": True,
    "attention_out_bias": True,
    "rope_theta": 10000.0,
    "rope_double_precision": True,
    "causal_offset": 1,
    "timestep_scale_multiplier": 1000,
    "cross_attn_timestep_scale_multiplier": 1000,
    "rope_type": "split",
    "use_prompt_embeddings": True,
    "perturbed_attn": False,
}
# 2.3: gated attention, prompt (cross-attention) modulation, text projections moved out.
_TRANSFORMER_2_3 = {
    **_TRANSFORMER_2_0,
    "gated_attn": True,
    "cross_attn_mod": True,
    "audio_gated_attn": True,
    "audio_cross_attn_mod": True,
    "use_prompt_embeddings": False,
    "perturbed_attn": True,
}
# 2.5: the video feed-forward has no bias; a learned marker for single-pixel-frame tokens.
_TRANSFORMER_2_5 = {**_TRANSFORMER_2_3, "ff_bias": False, "use_keyframes_abs_pos_embedding": True}

_CONNECTORS_2_0: dict[str, Any] = {
    "caption_channels": 3840,
    "text_proj_in_factor": 49,
    "video_connector_num_attention_heads": 30,
    "video_connector_attention_head_dim": 128,
    "video_connector_num_layers": 2,
    "video_connector_num_learnable_registers": 128,
    "video_gated_attn": False,
    "audio_connector_num_attention_heads": 30,
    "audio_connector_attention_head_dim": 128,
    "audio_connector_num_layers": 2,
    "audio_connector_num_learnable_registers": 128,
    "audio_gated_attn": False,
    "connector_rope_base_seq_len": 4096,
    "rope_theta": 10000.0,
    "rope_double_precision": True,
    "causal_temporal_positioning": False,
    "rope_type": "split",
    "per_modality_projections": False,
    "proj_bias": False,
}
_CONNECTORS_2_3 = {
    **_CONNECTORS_2_0,
    "video_connector_num_attention_heads": 32,
    "video_connector_num_layers": 8,
    "video_gated_attn": True,
    "audio_connector_num_attention_heads": 32,
    "audio_connector_attention_head_dim": 64,
    "audio_connector_num_layers": 8,
    "audio_gated_attn": True,
    "per_modality_projections": True,
    "video_hidden_dim": 4096,
    "audio_hidden_dim": 2048,
    "proj_bias": True,
}

_VAE_2_0: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "block_out_channels": [256, 512, 1024, 2048],
    "down_block_types": ["LTX2VideoDownBlock3D"] * 4,
    "decoder_block_out_channels": [256, 512, 1024],
    "layers_per_block": [4, 6, 6, 2, 2],
    "decoder_layers_per_block": [5, 5, 5, 5],
    "spatio_temporal_scaling": [True, True, True, True],
    "decoder_spatio_temporal_scaling": [True, True, True],
    "decoder_inject_noise": [False, False, False, False],
    "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    "upsample_type": ["spatiotemporal", "spatiotemporal", "spatiotemporal"],
    "upsample_residual": [True, True, True],
    "upsample_factor": [2, 2, 2],
    "timestep_conditioning": False,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-6,
    "encoder_causal": True,
    "decoder_causal": False,
    "encoder_spatial_padding_mode": "zeros",
    "decoder_spatial_padding_mode": "reflect",
    "spatial_compression_ratio": 32,
    "temporal_compression_ratio": 8,
}
# 2.3 and 2.5 (the conv decoder): a narrower encoder top and a four-stage decoder.
_VAE_2_3 = {
    **_VAE_2_0,
    "block_out_channels": [256, 512, 1024, 1024],
    "decoder_block_out_channels": [256, 512, 512, 1024],
    "layers_per_block": [4, 6, 4, 2, 2],
    "decoder_layers_per_block": [4, 6, 4, 2, 2],
    "decoder_spatio_temporal_scaling": [True, True, True, True],
    "decoder_inject_noise": [False, False, False, False, False],
    "upsample_type": ["spatiotemporal", "spatiotemporal", "temporal", "spatial"],
    "upsample_residual": [False, False, False, False],
    "upsample_factor": [2, 2, 1, 2],
    "decoder_spatial_padding_mode": "zeros",
}
# The same for every version so far.
_AUDIO_VAE: dict[str, Any] = {
    "base_channels": 128,
    "output_channels": 2,
    "ch_mult": [1, 2, 4],
    "num_res_blocks": 2,
    "attn_resolutions": None,
    "in_channels": 2,
    "resolution": 256,
    "latent_channels": 8,
    "norm_type": "pixel",
    "causality_axis": "height",
    "dropout": 0.0,
    "mid_block_add_attention": False,
    "sample_rate": 16000,
    "mel_hop_length": 160,
    "is_causal": True,
    "mel_bins": 64,
    "double_z": True,
}
_VOCODER_2_0: dict[str, Any] = {
    "in_channels": 128,
    "hidden_channels": 1024,
    "out_channels": 2,
    "upsample_kernel_sizes": [16, 15, 8, 4, 4],
    "upsample_factors": [6, 5, 2, 2, 2],
    "resnet_kernel_sizes": [3, 7, 11],
    "resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "act_fn": "leaky_relu",
    "leaky_relu_negative_slope": 0.1,
    "antialias": False,
    "final_act_fn": "tanh",
    "final_bias": True,
    "output_sampling_rate": 24000,
}
# 2.3+: a 16 kHz vocoder followed by a bandwidth extension to 48 kHz (`LTX2VocoderWithBWE`).
_VOCODER_BWE: dict[str, Any] = {
    "in_channels": 128,
    "hidden_channels": 1536,
    "out_channels": 2,
    "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
    "upsample_factors": [5, 2, 2, 2, 2, 2],
    "resnet_kernel_sizes": [3, 7, 11],
    "resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "act_fn": "snakebeta",
    "leaky_relu_negative_slope": 0.1,
    "antialias": True,
    "antialias_ratio": 2,
    "antialias_kernel_size": 12,
    "final_act_fn": None,
    "final_bias": False,
    "bwe_in_channels": 128,
    "bwe_hidden_channels": 512,
    "bwe_out_channels": 2,
    "bwe_upsample_kernel_sizes": [12, 11, 4, 4, 4],
    "bwe_upsample_factors": [6, 5, 2, 2, 2],
    "bwe_resnet_kernel_sizes": [3, 7, 11],
    "bwe_resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "bwe_act_fn": "snakebeta",
    "bwe_leaky_relu_negative_slope": 0.1,
    "bwe_antialias": True,
    "bwe_antialias_ratio": 2,
    "bwe_antialias_kernel_size": 12,
    "bwe_final_act_fn": None,
    "bwe_final_bias": False,
    "filter_length": 512,
    "hop_length": 80,
    "window_length": 512,
    "num_mel_channels": 64,
    "input_sampling_rate": 16000,
    "output_sampling_rate": 48000,
}
# The dev (non-distilled) sampler: mu grows linearly with the packed video tokens, the last
# sigma is stretched to 0.1. The same for every version (diffusers' converter; LTX2Pipeline).
SCHEDULER: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
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
# Distilled checkpoints are sampled on this fixed list (ltx-pipelines `DISTILLED_SIGMA_VALUES`,
# diffusers `pipelines/ltx2/utils.py`), not on the shifted dev schedule.
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)

# LoRA target presets (ltx.lora.TARGETS) and whether each reaches the attention gates
# (`to_gate_logits`, a per-head Linear of 2.3+). None does: gates are left frozen, as peers advise.
GATE_MODULE = "to_gate_logits"


@dataclass(frozen=True)
class Version:
    """One LTX-2 release: its configs at full size and what its files and sampler look like."""

    name: str
    model_id: str
    layout: Literal["single_file", "split"]
    text_encoder: Literal["gemma3", "gemma4"]
    vocoder_class: str
    configs: dict[str, dict[str, Any]] = field(repr=False)
    keyframe_embedding: bool = False
    gated_attention: bool = False
    distilled_names: tuple[str, ...] = ()  # file-name marks of the distilled checkpoints

    @property
    def label(self) -> str:
        return f"LTX-{self.name}"


VERSIONS: dict[str, Version] = {
    "2.0": Version(
        name="2.0",
        model_id="Lightricks/LTX-2",
        layout="single_file",
        text_encoder="gemma3",
        vocoder_class="LTX2Vocoder",
        configs={
            "transformer": _TRANSFORMER_2_0,
            "connectors": _CONNECTORS_2_0,
            "vae": _VAE_2_0,
            "audio_vae": _AUDIO_VAE,
            "vocoder": _VOCODER_2_0,
        },
        distilled_names=("distilled",),
    ),
    "2.3": Version(
        name="2.3",
        model_id="Lightricks/LTX-2.3",
        layout="single_file",
        text_encoder="gemma3",
        vocoder_class="LTX2VocoderWithBWE",
        configs={
            "transformer": _TRANSFORMER_2_3,
            "connectors": _CONNECTORS_2_3,
            "vae": _VAE_2_3,
            "audio_vae": _AUDIO_VAE,
            "vocoder": _VOCODER_BWE,
        },
        gated_attention=True,
        distilled_names=("distilled",),
    ),
    "2.5": Version(
        name="2.5",
        model_id="Lightricks/LTX-2.5",
        layout="split",
        text_encoder="gemma4",
        vocoder_class="LTX2VocoderWithBWE",
        configs={
            "transformer": _TRANSFORMER_2_5,
            # caption_channels / text_proj_in_factor come from the Gemma 4 file's own config
            "connectors": _CONNECTORS_2_3,
            "vae": _VAE_2_3,
            "audio_vae": _AUDIO_VAE,
            "vocoder": _VOCODER_BWE,
        },
        keyframe_embedding=True,
        gated_attention=True,
        distilled_names=("distilled",),
    ),
}


def get_version(name: str) -> Version:
    """The record of LTX-`name`; a UserError naming the supported versions otherwise."""
    if name not in VERSIONS:
        raise UserError(
            f"model.ltx_version={name!r} is not supported; supported: {', '.join(SUPPORTED)}"
        )
    return VERSIONS[name]


def detect_version(keys: Iterable[str], metadata: dict[str, str] | None = None) -> str | None:
    """The version a transformer's official keys (or its `model_version` metadata) belong to;
    None when the keys hold no transformer."""
    stated = _stated_version((metadata or {}).get("model_version", ""))
    if stated:
        return stated
    names = {k.removeprefix("model.diffusion_model.") for k in keys}
    if "patchify_proj.weight" not in names:
        return None
    if "keyframes_abs_pos_embedding" in names or "transformer_blocks.0.ff.net.2.bias" not in names:
        return "2.5"  # 2.5's marker, or its bias-free video feed-forward
    if "prompt_adaln_single.linear.weight" in names:
        return "2.3"
    return "2.0"


def _stated_version(text: str) -> str | None:
    """'2.3.rc1' / '2.5-rc2' / '2.3.0' -> the supported release it belongs to, if any."""
    match = re.match(r"(\d+)[.-](\d+)", text)
    if not match:
        return None
    stated = f"{match[1]}.{match[2]}"
    return stated if stated in VERSIONS else None


def check_version(configured: str, found: str | None, file: object) -> None:
    """A file of another version than the config names is an error that says what to do."""
    if found is not None and found != configured:
        raise UserError(
            f"{file}: expected an LTX-{configured} checkpoint (model.ltx_version={configured}), "
            f"found LTX-{found}; use model={model_group(found)} or point model.path at an "
            f"LTX-{configured} file"
        )


def model_group(version: str) -> str:
    """The configs/model/ entry of a version: ltx2, ltx2_3, ltx2_5."""
    return "ltx2" if version == "2.0" else "ltx2_" + version.split(".")[1]


# The Gemma 3 12B text encoder of LTX-2.0 and 2.3, as a transformers `Gemma3Config` (the facts of
# ltx-core 1.0.0's `text_encoders/gemma/config.py`, GEMMA3_CONFIG_FOR_LTX; compared in
# tests/unit/test_ltx_versions_fullsize.py). LTX-2.5's Gemma 4 is sized by its file's own config.
GEMMA3_FOR_LTX: dict[str, Any] = {
    "model_type": "gemma3",
    "architectures": ["Gemma3ForConditionalGeneration"],
    "boi_token_index": 255999,
    "eoi_token_index": 256000,
    "image_token_index": 262144,
    "mm_tokens_per_image": 256,
    "text_config": {
        "model_type": "gemma3_text",
        "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 3840,
        "intermediate_size": 15360,
        "max_position_embeddings": 131072,
        "num_attention_heads": 16,
        "num_hidden_layers": 48,
        "num_key_value_heads": 8,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06,
        "rope_local_base_freq": 10000,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "rope_theta": 1000000,
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
        "vocab_size": 262208,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152,
        "image_size": 896,
        "intermediate_size": 4304,
        "layer_norm_eps": 1e-06,
        "num_attention_heads": 16,
        "num_channels": 3,
        "num_hidden_layers": 27,
        "patch_size": 14,
        "vision_use_head": False,
    },
}


def text_encoder_config(version: str) -> dict[str, Any] | None:
    """The full-size text encoder's transformers config; None where only its file says (2.5)."""
    return GEMMA3_FOR_LTX if get_version(version).text_encoder == "gemma3" else None
