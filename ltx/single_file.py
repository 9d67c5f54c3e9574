"""The official single-file LTX-2 checkpoint (`model.diffusion_model.*`, `vae.*`, `audio_vae.*`,
`text_embedding_projection.*`, `vocoder.*` keys in one safetensors file), loaded with a *local*
config folder (never the hub).

diffusers 0.42.1 maps the transformer, the video VAE and the audio VAE from that layout; for the
text connectors and the vocoder it has no mapping, so ours is below (`OWN_MAPPINGS`), derived
from the module structure of `LTX2TextConnectors` / `LTX2Vocoder` and the renames of diffusers'
own conversion script. The Gemma-3 text encoder and its tokenizer are not in the file: they come
from a local folder.
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
    "connectors": "LTX2TextConnectors",
    "vocoder": "LTX2Vocoder",
}
TRANSFORMER_PREFIX = "model.diffusion_model."
PROJECTION_PREFIX = "text_embedding_projection."
VOCODER_PREFIX = "vocoder."

# diffusers name -> official name, per dotted segment. Connectors: the two 1-d transformers
# live inside the official transformer (`model.diffusion_model.<modality>_embeddings_connector`),
# the input projection beside it (`text_embedding_projection.aggregate_embed`; LTX-2.3 has one
# per modality). Vocoder (HiFi-GAN naming in the official code): ups, resblocks, conv_pre/post.
CONNECTOR_SEGMENTS = {
    "video_connector": "video_embeddings_connector",
    "audio_connector": "audio_embeddings_connector",
    "transformer_blocks": "transformer_1d_blocks",
    "norm_q": "q_norm",
    "norm_k": "k_norm",
}
PROJECTIONS = {
    "text_proj_in": "aggregate_embed",
    "video_text_proj_in": "video_aggregate_embed",  # LTX-2.3
    "audio_text_proj_in": "audio_aggregate_embed",
}
VOCODER_SEGMENTS = {
    "upsamplers": "ups",
    "resnets": "resblocks",
    "conv_in": "conv_pre",
    "conv_out": "conv_post",
}
_CONNECTOR_SEGMENTS_BACK = {v: k for k, v in CONNECTOR_SEGMENTS.items()}
_PROJECTIONS_BACK = {v: k for k, v in PROJECTIONS.items()}
_VOCODER_SEGMENTS_BACK = {v: k for k, v in VOCODER_SEGMENTS.items()}


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
    if name in OWN_MAPPINGS:
        return _load_own_mapping(checkpoint, config_dir / name, name, dtype)
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


def _load_own_mapping(checkpoint: Path, config_dir: Path, name: str, dtype: str) -> Any:
    """Connectors or vocoder: the checkpoint's keys through our mapping into a model built from
    the local config. Strict: a key missing from the file, or left over, is an error."""
    from safetensors import safe_open

    cls = _component_class(name, config_dir)
    with safe_open(str(checkpoint), "pt") as f:
        sd = {}
        for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            ours = OWN_MAPPINGS[name](key)
            if ours is not None:
                sd[ours] = f.get_tensor(key)
    model = cls.from_config(cls.load_config(str(config_dir)))
    wanted = set(model.state_dict())
    missing, extra = sorted(wanted - set(sd)), sorted(set(sd) - wanted)
    if missing or extra:
        raise UserError(
            f"{checkpoint} does not fit {config_dir}/config.json for the {name}: "
            + (f"missing {_some(missing)}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {_some(extra)}" if extra else "")
            + " (is it the checkpoint of the same LTX-2 version?)"
        )
    model.load_state_dict(sd, strict=True)
    wanted_dtype = torch_dtype(dtype)
    return (model if model.dtype == wanted_dtype else model.to(wanted_dtype)).eval()


def _component_class(name: str, config_dir: Path) -> Any:
    """The diffusers class for `name`; the local config's `_class_name` must agree, since only
    these classes' layouts are mapped (not LTX-2.3's `LTX2VocoderWithBWE`)."""
    import json

    from diffusers.pipelines import ltx2
    from diffusers.pipelines.ltx2 import vocoder

    expected = SINGLE_FILE_COMPONENTS[name]
    found = json.loads((config_dir / "config.json").read_text()).get("_class_name", expected)
    if found != expected:
        raise UserError(
            f"{config_dir}/config.json is a {found}: single-file loading maps only {expected}; "
            f"load the {name} from a diffusers folder instead"
        )
    return getattr(ltx2, expected, None) or getattr(vocoder, expected)


def _some(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def connectors_key(official: str) -> str | None:
    """Official key -> `LTX2TextConnectors` key; None for keys of other components."""
    if official.startswith(PROJECTION_PREFIX):
        head, _, rest = official.removeprefix(PROJECTION_PREFIX).partition(".")
        ours = _PROJECTIONS_BACK.get(head)
        return f"{ours}.{rest}" if ours else None
    inner = official.removeprefix(TRANSFORMER_PREFIX)
    if inner == official or not inner.startswith(
        ("video_embeddings_connector.", "audio_embeddings_connector.")
    ):
        return None
    return _rename(inner, _CONNECTOR_SEGMENTS_BACK)


def vocoder_key(official: str) -> str | None:
    """Official key -> `LTX2Vocoder` key; None for keys of other components."""
    if not official.startswith(VOCODER_PREFIX):
        return None
    return _rename(official.removeprefix(VOCODER_PREFIX), _VOCODER_SEGMENTS_BACK)


def _rename(key: str, table: dict[str, str]) -> str:
    return ".".join(table.get(segment, segment) for segment in key.split("."))


OWN_MAPPINGS = {"connectors": connectors_key, "vocoder": vocoder_key}


def to_official(components: dict[str, Any]) -> dict[str, Any]:
    """diffusers state dicts of transformer / vae / audio_vae / connectors / vocoder -> one
    state dict in the official single-file layout (the inverse of the loaders' mappings)."""
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


def _connectors_official_key(key: str) -> str:
    head, _, rest = key.partition(".")
    if head in PROJECTIONS:
        return f"{PROJECTION_PREFIX}{PROJECTIONS[head]}.{rest}"
    return TRANSFORMER_PREFIX + _rename(key, CONNECTOR_SEGMENTS)


def _vocoder_official_key(key: str) -> str:
    return VOCODER_PREFIX + _rename(key, VOCODER_SEGMENTS)


_OFFICIAL_KEY = {
    "transformer": _transformer_key,
    "vae": _vae_key,
    "audio_vae": _audio_vae_key,
    "connectors": _connectors_official_key,
    "vocoder": _vocoder_official_key,
}
