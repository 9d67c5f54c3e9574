"""The official LTX-2 file layouts (`model.diffusion_model.*`, `vae.*`, `audio_vae.*`,
`text_embedding_projection.*`, `vocoder.*` keys: one file for 2.0 and 2.3, one per component for
2.5), read into the diffusers classes with a config that never comes from the hub.

One direction is written down, diffusers key -> official key (`official_key`), derived from the
module structure and the renames of diffusers' `scripts/convert_ltx2_to_diffusers.py`; loading
inverts it against the model's own keys, so a key is either matched, missing or left over, and
all three are checked. diffusers 0.42.1's single-file converters lack the LTX-2.3 renames
(`prompt_adaln_single`, the VAE's four-stage decoder), so none of them is used. The Gemma text
encoder and its tokenizer come from a folder (2.0, 2.3) or their own file (2.5).
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
# The classes whose official layout is mapped (the first is the default).
COMPONENT_CLASSES = {
    **{name: (cls,) for name, cls in SINGLE_FILE_COMPONENTS.items()},
    "vocoder": ("LTX2Vocoder", "LTX2VocoderWithBWE"),  # 2.0; 2.3+ (bandwidth extension)
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
    "act_out": "act_post",  # 2.3+: the anti-aliased activations of LTX2VocoderWithBWE
}
_CONNECTOR_PREFIXES = (
    TRANSFORMER_PREFIX + "video_embeddings_connector.",
    TRANSFORMER_PREFIX + "audio_embeddings_connector.",
)
_OWNERS = (
    (TRANSFORMER_PREFIX, "transformer"),
    ("vae.", "vae"),
    ("audio_vae.", "audio_vae"),
    (VOCODER_PREFIX, "vocoder"),
)
# Official keys diffusers has no place for: the VAE's unused statistics (the converter drops
# them as well).
IGNORED = re.compile(r"^vae\.per_channel_statistics\.(channel|mean-of-stds)")


def load_single_file(checkpoint: Path, config_dir: Path, name: str, dtype: str = "float32") -> Any:
    """One of `SINGLE_FILE_COMPONENTS` from the official checkpoint, sized by the local
    diffusers config in `config_dir/<name>/config.json`."""
    import json

    checkpoint, config_dir = Path(checkpoint), Path(config_dir)
    if name not in SINGLE_FILE_COMPONENTS:
        raise UserError(f"'{name}' is not in the single-file checkpoint; load it from {config_dir}")
    for needed in (checkpoint, config_dir / name / "config.json"):
        if not needed.is_file():
            raise UserError(
                f"missing {needed}: the single-file loader needs it (nothing is downloaded)"
            )
    config = json.loads((config_dir / name / "config.json").read_text())
    return load_official([checkpoint], config, name, dtype, where=config_dir / name)


def load_official(
    files: list[Path], config: dict[str, Any], name: str, dtype: str, where: object = "config"
) -> Any:
    """Component `name` built from its diffusers `config` with the weights of the official
    `files` (each key through `official_key`, inverted against the model's own keys). Strict:
    a key missing, left over or of another shape is an error naming the file."""
    from accelerate import init_empty_weights

    cls = component_class(name, config, where)
    with init_empty_weights():  # a 19 B transformer is never allocated twice
        model = cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    wanted = {official_key(name, k): k for k in model.state_dict()}
    sd = _read_component(files, name, wanted, where)
    _check_shapes(model, sd, files, name)
    model.load_state_dict(sd, strict=True, assign=True)
    wanted_dtype = torch_dtype(dtype)
    return (model if model.dtype == wanted_dtype else model.to(wanted_dtype)).eval()


def _read_component(
    files: list[Path], name: str, wanted: dict[str, str], where: object
) -> dict[str, Any]:
    from safetensors import safe_open

    sources = official_sources(files, name, wanted, where)
    sd: dict[str, Any] = {}
    for path in files:
        with safe_open(str(path), "pt") as f:
            for key, (source, file_key) in sources.items():
                if source == path:
                    # a fresh, aligned copy: CPU kernels on a file-mapped tensor at an odd
                    # offset round differently (5e-7 on the tiny 2.3 model)
                    sd[key] = f.get_tensor(file_key).clone()
    return sd


def official_sources(
    files: list[Path], name: str, wanted: dict[str, str], where: object
) -> dict[str, tuple[Path, str]]:
    """Diffusers key -> (file, key in that file) for component `name`, from the files'
    headers only (`wanted`: official key -> diffusers key). Strict: a key missing or left
    over is an error naming the files."""
    from safetensors import safe_open

    found: dict[str, tuple[Path, str]] = {}
    extra: list[str] = []
    for path in files:
        with safe_open(str(path), "pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                official = normalise_key(key)
                if owner(official) != name or IGNORED.search(official):
                    continue
                if official in wanted:
                    found[wanted[official]] = (path, key)
                else:
                    extra.append(_strip(official))
    missing = sorted(_strip(o) for o, k in wanted.items() if k not in found)
    refuse_mismatch(files, where, name, missing, extra)
    return found


def refuse_mismatch(
    files: list[Path], where: object, name: str, missing: list[str], extra: list[str]
) -> None:
    if missing or extra:
        raise UserError(
            f"{', '.join(str(p) for p in files)} does not fit {where} for the {name}: "
            + (f"missing {_some(missing)}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {_some(sorted(extra))}" if extra else "")
            + " (is it the checkpoint of the same LTX-2 version?)"
        )


def _check_shapes(model: Any, sd: dict[str, Any], files: list[Path], name: str) -> None:
    own = model.state_dict()
    for key, value in sd.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise UserError(
                f"{files[0]}: {official_key(name, key)} is {list(value.shape)}, the {name} "
                f"config expects {list(own[key].shape)} (another LTX version or size?)"
            )


def _strip(official: str) -> str:
    """An official key without its component prefix, as error messages show it."""
    for prefix in (TRANSFORMER_PREFIX, "vae.", "audio_vae.", VOCODER_PREFIX):
        if official.startswith(prefix):
            return official.removeprefix(prefix)
    return official


def component_class(name: str, config: dict[str, Any], where: object = "config") -> Any:
    """The diffusers class of component `name`; the config's `_class_name` must be one whose
    official layout is mapped here."""
    import diffusers
    from diffusers.pipelines import ltx2
    from diffusers.pipelines.ltx2 import vocoder

    allowed = COMPONENT_CLASSES[name]
    found = config.get("_class_name", allowed[0])
    if found not in allowed:
        raise UserError(
            f"{where} is a {found}: the official layout maps only {' / '.join(allowed)} for "
            f"the {name}; load it from a diffusers folder instead"
        )
    for module in (diffusers, ltx2, vocoder):
        if hasattr(module, found):
            return getattr(module, found)
    raise UserError(f"diffusers has no {found}")


def _some(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def owner(official: str) -> str | None:
    """Which component an official key belongs to (None: another part of the file)."""
    if official.startswith(PROJECTION_PREFIX) or official.startswith(_CONNECTOR_PREFIXES):
        return "connectors"
    for prefix, name in _OWNERS:
        if official.startswith(prefix):
            return name
    return None


def normalise_key(key: str) -> str:
    """Standalone VAE files (LTX-2.5's `vae/`) may carry bare keys: give them the `vae.`
    prefix the single file uses, so one mapping serves both."""
    if key.startswith(("encoder.", "decoder.", "per_channel_statistics.")):
        return "vae." + key
    return key


def _rename(key: str, table: dict[str, str]) -> str:
    return ".".join(table.get(segment, segment) for segment in key.split("."))


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
    # the BWE's anti-aliasing low-pass is a module of its own in the official code
    key = key.replace(".downsample.filter", ".downsample.lowpass.filter")
    return VOCODER_PREFIX + _rename(key, VOCODER_SEGMENTS)


def official_key(name: str, key: str) -> str:
    """The official name of component `name`'s diffusers state-dict key `key`."""
    return _OFFICIAL_KEY[name](key)


_OFFICIAL_KEY = {
    "transformer": _transformer_key,
    "vae": _vae_key,
    "audio_vae": _audio_vae_key,
    "connectors": _connectors_official_key,
    "vocoder": _vocoder_official_key,
}
