"""LoRA key layouts: diffusers/PEFT `transformer.…` <-> ComfyUI / official `diffusion_model.…`.

Block internals (`transformer_blocks.N.attn1.to_q`, `ff.net.2`, …) are named the same in both;
only a few top-level modules and the q/k norms differ. The mapping is the exact inverse of
diffusers' `_convert_non_diffusers_ltx2_lora_to_diffusers`, applied per dotted name segment.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

DIFFUSERS_PREFIX = "transformer."
COMFY_PREFIX = "diffusion_model."
CONNECTORS_PREFIX = "connectors."
COMFY_CONNECTORS_PREFIX = "text_embedding_projection."

# diffusers segment -> official segment (transformer)
TO_OFFICIAL = {
    "proj_in": "patchify_proj",
    "audio_proj_in": "audio_patchify_proj",
    "time_embed": "adaln_single",
    "audio_time_embed": "audio_adaln_single",
    "av_cross_attn_video_scale_shift": "av_ca_video_scale_shift_adaln_single",
    "av_cross_attn_video_a2v_gate": "av_ca_a2v_gate_adaln_single",
    "av_cross_attn_audio_scale_shift": "av_ca_audio_scale_shift_adaln_single",
    "av_cross_attn_audio_v2a_gate": "av_ca_v2a_gate_adaln_single",
    "video_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_video",
    "audio_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_audio",
    "norm_q": "q_norm",
    "norm_k": "k_norm",
    "prompt_adaln": "prompt_adaln_single",  # LTX-2.3
    "audio_prompt_adaln": "audio_prompt_adaln_single",
}
FROM_OFFICIAL = {v: k for k, v in TO_OFFICIAL.items()}
CONNECTORS_TO_OFFICIAL = {"text_proj_in": "aggregate_embed"}
CONNECTORS_FROM_OFFICIAL = {v: k for k, v in CONNECTORS_TO_OFFICIAL.items()}


def to_comfyui(sd: dict[str, T]) -> dict[str, T]:
    """`transformer.X` -> `diffusion_model.X'` (and connectors -> `text_embedding_projection.`)."""
    return {_to_comfy_key(k): v for k, v in sd.items()}


def from_comfyui(sd: dict[str, T]) -> dict[str, T]:
    """Inverse of `to_comfyui`; keys already in diffusers layout pass through unchanged."""
    return {_from_comfy_key(k): v for k, v in sd.items()}


def _rename(name: str, table: dict[str, str]) -> str:
    return ".".join(table.get(seg, seg) for seg in name.split("."))


def _to_comfy_key(key: str) -> str:
    if key.startswith(DIFFUSERS_PREFIX):
        return COMFY_PREFIX + _rename(key.removeprefix(DIFFUSERS_PREFIX), TO_OFFICIAL)
    if key.startswith(CONNECTORS_PREFIX):
        rest = key.removeprefix(CONNECTORS_PREFIX)
        return COMFY_CONNECTORS_PREFIX + _rename(rest, CONNECTORS_TO_OFFICIAL)
    raise KeyError(f"LoRA key '{key}' is not in diffusers layout (transformer.* / connectors.*)")


def _from_comfy_key(key: str) -> str:
    if key.startswith(COMFY_PREFIX):
        return DIFFUSERS_PREFIX + _rename(key.removeprefix(COMFY_PREFIX), FROM_OFFICIAL)
    if key.startswith(COMFY_CONNECTORS_PREFIX):
        rest = key.removeprefix(COMFY_CONNECTORS_PREFIX)
        return CONNECTORS_PREFIX + _rename(rest, CONNECTORS_FROM_OFFICIAL)
    if key.startswith((DIFFUSERS_PREFIX, CONNECTORS_PREFIX)):
        return key
    raise KeyError(f"LoRA key '{key}' is in neither ComfyUI nor diffusers layout")


def diffusers_module(official: str) -> str:
    """A transformer module's official name (`transformer_blocks.0.attn1.q_norm`) in diffusers'
    naming (`transformer_blocks.0.attn1.norm_q`), no prefixes."""
    return _rename(official, FROM_OFFICIAL)


def official_module(name: str) -> str:
    """Inverse of `diffusers_module`."""
    return _rename(name, TO_OFFICIAL)


def is_comfyui(sd: dict[str, object]) -> bool:
    """True when any key uses the ComfyUI / official `diffusion_model.` prefix."""
    return any(k.startswith((COMFY_PREFIX, COMFY_CONNECTORS_PREFIX)) for k in sd)
