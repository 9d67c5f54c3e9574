"""The official single-file LTX-2 checkpoint (`model.diffusion_model.*`, `vae.*`, `audio_vae.*`
keys in one safetensors file), loaded with diffusers' single-file loaders and a *local* config
folder (never the hub).

diffusers 0.42.1 maps the transformer, the video VAE and the audio VAE from that layout; the
text connectors and the vocoder it does not, so they come from a local diffusers folder, as does
the Gemma-3 text encoder and its tokenizer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ltx.loading import torch_dtype
from ltx.lora_keys import TO_OFFICIAL
from stagekit.errors import UserError

SINGLE_FILE_COMPONENTS = {
    "transformer": "LTX2VideoTransformer3DModel",
    "vae": "AutoencoderKLLTX2Video",
    "audio_vae": "AutoencoderKLLTX2Audio",
}
TRANSFORMER_PREFIX = "model.diffusion_model."


def load_single_file(checkpoint: Path, config_dir: Path, name: str, dtype: str = "float32") -> Any:
    """One of `SINGLE_FILE_COMPONENTS` from the official checkpoint, sized by the local
    diffusers config in `config_dir/<name>/config.json`."""
    import diffusers

    checkpoint, config_dir = Path(checkpoint), Path(config_dir)
    if name not in SINGLE_FILE_COMPONENTS:
        raise UserError(f"'{name}' is not in the single-file checkpoint; load it from {config_dir}")
    for needed in (checkpoint, config_dir / name / "config.json"):
        if not needed.is_file():
            raise UserError(
                f"missing {needed}: the single-file loader needs it (nothing is downloaded)"
            )
    cls = getattr(diffusers, SINGLE_FILE_COMPONENTS[name])
    if not hasattr(cls, "from_single_file"):  # the audio VAE in 0.42.1: mapping, no mixin
        return _load_mapped(cls, checkpoint, config_dir / name, name, dtype)
    model = cls.from_single_file(
        str(checkpoint),
        config=str(config_dir),
        subfolder=name,
        local_files_only=True,
        torch_dtype=torch_dtype(dtype),
    )
    return model.eval()


def _load_mapped(cls: Any, checkpoint: Path, config_dir: Path, name: str, dtype: str) -> Any:
    """What `from_single_file` does, by hand: the component's keys through diffusers' own
    mapping function, into a model built from the local config, every key required."""
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES
    from safetensors import safe_open

    convert = SINGLE_FILE_LOADABLE_CLASSES[cls.__name__]["checkpoint_mapping_fn"]
    with safe_open(str(checkpoint), "pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys() if k.startswith(f"{name}.")}  # noqa: SIM118
    model = cls.from_config(cls.load_config(str(config_dir)))
    model.load_state_dict(convert(sd), strict=True)
    return model.to(torch_dtype(dtype)).eval()


def to_official(components: dict[str, Any]) -> dict[str, Any]:
    """diffusers state dicts of transformer / vae / audio_vae -> one state dict in the official
    single-file layout (the inverse of diffusers' `convert_ltx2_*_to_diffusers`)."""
    out: dict[str, Any] = {}
    for name, module in components.items():
        for key, value in module.state_dict().items():
            out[_OFFICIAL_KEY[name](key)] = value
    return out


def _transformer_key(key: str) -> str:
    return TRANSFORMER_PREFIX + ".".join(TO_OFFICIAL.get(s, s) for s in key.split("."))


# diffusers block name -> official flat block index: 4 encoder stages of [resnets, downsampler]
# then the mid block as block 8; the decoder starts with its mid block and mirrors the rest.
_VAE_BLOCKS = [
    (
        r"encoder\.down_blocks\.(\d+)\.resnets\.",
        lambda i: f"encoder.down_blocks.{2 * i}.res_blocks.",
    ),
    (
        r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.",
        lambda i: f"encoder.down_blocks.{2 * i + 1}.",
    ),
    (r"encoder\.mid_block\.resnets\.", lambda _: "encoder.down_blocks.8.res_blocks."),
    (r"decoder\.mid_block\.resnets\.", lambda _: "decoder.up_blocks.0.res_blocks."),
    (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda i: f"decoder.up_blocks.{2 * i + 1}."),
    (
        r"decoder\.up_blocks\.(\d+)\.resnets\.",
        lambda i: f"decoder.up_blocks.{2 * i + 2}.res_blocks.",
    ),
]


def _vae_key(key: str) -> str:
    for pattern, official in _VAE_BLOCKS:
        match = re.match(pattern, key)
        if match:
            index = int(match[1]) if match.groups() else 0
            key = official(index) + key[match.end() :]
            break
    return "vae." + _statistics(key)


def _statistics(key: str) -> str:
    key = key.replace("latents_mean", "per_channel_statistics.mean-of-means")
    return key.replace("latents_std", "per_channel_statistics.std-of-means")


def _audio_vae_key(key: str) -> str:
    return "audio_vae." + _statistics(key)


_OFFICIAL_KEY = {"transformer": _transformer_key, "vae": _vae_key, "audio_vae": _audio_vae_key}
