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

from ltx.fullsize import (
    AUDIO_VAE,
    CONNECTORS_2_0,
    CONNECTORS_2_3,
    GEMMA3_FOR_LTX,
    TRANSFORMER_2_0,
    TRANSFORMER_2_3,
    TRANSFORMER_2_5,
    VAE_2_0,
    VAE_2_3,
    VOCODER_2_0,
    VOCODER_BWE,
)
from stagekit.errors import UserError

SUPPORTED = ("2.0", "2.3", "2.5")


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
            "transformer": TRANSFORMER_2_0,
            "connectors": CONNECTORS_2_0,
            "vae": VAE_2_0,
            "audio_vae": AUDIO_VAE,
            "vocoder": VOCODER_2_0,
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
            "transformer": TRANSFORMER_2_3,
            "connectors": CONNECTORS_2_3,
            "vae": VAE_2_3,
            "audio_vae": AUDIO_VAE,
            "vocoder": VOCODER_BWE,
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
            "transformer": TRANSFORMER_2_5,
            # caption_channels / text_proj_in_factor come from the Gemma 4 file's own config
            "connectors": CONNECTORS_2_3,
            "vae": VAE_2_3,
            "audio_vae": AUDIO_VAE,
            "vocoder": VOCODER_BWE,
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


def text_encoder_config(version: str) -> dict[str, Any] | None:
    """The full-size text encoder's transformers config; None where only its file says (2.5)."""
    return GEMMA3_FOR_LTX if get_version(version).text_encoder == "gemma3" else None
