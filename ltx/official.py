"""The files users actually have: LTX-2.0 / 2.3 as one official checkpoint (plus a Gemma 3
folder), LTX-2.5 as one file per component in ComfyUI's folders (`diffusion_models/`, `vae/`,
`text_encoders/`, the Gemma 4 text encoder with its projection and tokenizer in one file).

`ensure_official` turns them into a small *view* folder in the models directory: a diffusers
`model_index.json`, each component's config (the version's full size, or `model.config_dir`),
symlinks to the weight files (so `ltx.identity.model_hash` covers their bytes) and
`official.json`, which says which files hold which component. Every stage then takes the view
path like any diffusers folder; `ltx.loading.load_components` reads the weights through the
official key map. Nothing is converted or copied.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from ltx.config import ModelConfig
from ltx.gemma4 import check_gemma_version, keys_and_metadata, load_gemma4, write_gemma4_assets
from ltx.single_file import SINGLE_FILE_COMPONENTS, load_official
from ltx.versions import (
    DISTILLED_SIGMAS,
    SCHEDULER,
    Version,
    check_version,
    detect_version,
    get_version,
)
from stagekit.errors import UserError
from stagekit.files import atomic_dir, write_json

OFFICIAL_JSON = "official.json"
WEIGHTS = "weights"
GEMMA_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
)


def is_official(path: Path) -> bool:
    """A single official checkpoint, or a folder in 2.5's ComfyUI layout."""
    path = Path(path)
    return (path.is_file() and path.suffix == ".safetensors") or (
        path.is_dir() and (path / "diffusion_models").is_dir()
    )


def official_files(path: Path, version: Version) -> dict[str, list[Path]]:
    """Component -> the official files holding its weights, for `version`'s layout."""
    path = Path(path).expanduser()
    if path.is_file():
        if version.layout != "single_file":
            raise UserError(
                f"{path}: {version.label} ships one file per component; set model.path to "
                "the folder holding diffusion_models/, vae/ and text_encoders/"
            )
        return {name: [path] for name in SINGLE_FILE_COMPONENTS}
    if version.layout != "split":
        raise UserError(
            f"{path}: {version.label} is one checkpoint file (ltx-2*.safetensors); set "
            "model.path to that file, or model.ltx_version=2.5 for a folder of split files"
        )
    transformer = _one(path / "diffusion_models", "*.safetensors", "the transformer")
    text = _one(path / "text_encoders", "*.safetensors", "the Gemma 4 text encoder")
    audio = _one(path / "vae", "*audio*.safetensors", "the audio VAE (with the vocoder)")
    return {
        "transformer": [transformer],
        "connectors": [transformer, text],  # 1-d transformers | projections
        "vae": [_video_vae(path / "vae")],
        "audio_vae": [audio],
        "vocoder": [audio],
        "text_encoder": [text],
    }


def _one(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(p for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else []
    dev = [p for p in found if "distilled" not in p.name]
    if len(dev) == 1 or (len(found) == 1 and not dev):
        return dev[0] if dev else found[0]
    if not found:
        raise UserError(f"no {pattern} in {folder}: {what} is needed (nothing is downloaded)")
    raise UserError(
        f"{folder} holds {len(found)} candidates for {what} ({', '.join(p.name for p in found)}): "
        "keep one there"
    )


def _video_vae(folder: Path) -> Path:
    """The conv-decoder VAE: diffusers' decoder is the conv one; 2.5's diffusion decoder
    (`ltx-2.5-video-vae-bf16`) is another architecture."""
    videos = [p for p in folder.glob("*.safetensors") if "audio" not in p.name]
    conv = [p for p in videos if "conv" in p.name]
    if len(conv) == 1:
        return conv[0]
    if videos:
        raise UserError(
            f"{folder}: found {', '.join(sorted(p.name for p in videos))} but not the conv-decoder "
            "video VAE (ltx-2.5-video-vae-conv-*.safetensors), which training and the diffusers "
            "sampler use; download it beside them"
        )
    raise UserError(f"no video VAE in {folder}: add ltx-2.5-video-vae-conv-*.safetensors")


def ensure_official(cfg: ModelConfig, models_dir: Path) -> Path:
    """The view folder of `cfg.path`'s official files, made once per set of files."""
    version = get_version(cfg.ltx_version)
    files = official_files(Path(cfg.path or ""), version)
    transformer = files["transformer"][0]
    _check_transformer(transformer, cfg.ltx_version, version)
    if cfg.inference_path:
        files["inference"] = [_inference_file(Path(cfg.inference_path).expanduser(), version)]
        _check_transformer(files["inference"][0], cfg.ltx_version, version)
    if any(mark in transformer.name for mark in version.distilled_names):
        warnings.warn(
            f"{transformer.name} is a distilled checkpoint: a LoRA trained on it learns the "
            "distilled few-step model, not the dev weights it will usually be applied to; "
            "train on the dev file",
            stacklevel=2,
        )
    text_dir = _text_encoder_dir(cfg, version)
    if "text_encoder" in files:
        check_gemma_version(transformer, files["text_encoder"][0])
    dest = Path(models_dir) / f"ltx{version.name}-{_identity(cfg, files, text_dir)[:12]}"
    if not (dest / OFFICIAL_JSON).is_file():
        with atomic_dir(dest) as tmp:
            _write_view(tmp, cfg, version, files, text_dir)
    return dest


def _check_transformer(path: Path, configured: str, version: Version) -> None:
    """Refuse a transformer of another version, or a quantised one, naming the right file."""
    keys, meta = keys_and_metadata(path)
    found = detect_version(keys, meta)
    if found is None and not any(k.endswith("patchify_proj.weight") for k in keys):
        raise UserError(
            f"{path}: expected the LTX-{configured} transformer, found no "
            "model.diffusion_model.patchify_proj.weight (is it another model or component?)"
        )
    check_version(configured, found, path)
    kind = quantised(path)
    if kind:
        raise UserError(
            f"{path.name} is a quantised transformer ({kind}); training and our renders read "
            f"the bf16 weights: use {DEV_FILES[version.name]}"
        )


# The bf16 dev transformers Lightricks publishes (README, MODELS-LTX-2.3.md)
DEV_FILES = {
    "2.0": "ltx-2-19b-dev.safetensors",
    "2.3": "ltx-2.3-22b-dev.safetensors",
    "2.5": "diffusion_models/ltx-2.5-22b-dev-transformer-bf16.safetensors",
}
# ltx-core's pre-quantised layouts: fp8 (`*.weight_scale`, float8 weights), nvfp4 (uint8
# weights with `weight_scale_2`), and int8 weight-only exports (int8 weights + scales)
_QUANT_SUFFIXES = (".weight_scale", ".weight_scale_2", ".input_scale", ".bias_scale")
_QUANT_DTYPES = {"F8_E4M3": "fp8 e4m3", "F8_E5M2": "fp8 e5m2", "I8": "int8", "U8": "packed 4-bit"}


def quantised(path: Path) -> str | None:
    """What kind of quantised checkpoint `path` is, or None for plain float weights (read from
    the file's header alone)."""
    from ltx.streaming import TensorReader

    header = TensorReader.header(path)
    for key, entry in header.items():
        if key.endswith(".weight") and entry["dtype"] in _QUANT_DTYPES:
            return f"{_QUANT_DTYPES[entry['dtype']]} weights"
    scaled = [k for k in header if k.endswith(_QUANT_SUFFIXES)]
    return f"scaled weights, e.g. {scaled[0]}" if scaled else None


def _inference_file(path: Path, version: Version) -> Path:
    """The distilled transformer renders use: its file (2.0/2.3: the distilled checkpoint)."""
    if not path.is_file():
        raise UserError(f"model.inference_path {path} is not a file (nothing is downloaded)")
    return path


def _text_encoder_dir(cfg: ModelConfig, version: Version) -> Path | None:
    if version.text_encoder == "gemma4":
        return None  # in text_encoders/, beside the transformer
    if not cfg.text_encoder_path:
        raise UserError(
            f"{version.label}'s checkpoint holds no text encoder: set "
            "model.text_encoder_path=<local Gemma 3 folder> (config.json, *.safetensors, "
            "tokenizer.json)"
        )
    folder = Path(cfg.text_encoder_path).expanduser()
    if not (folder / "config.json").is_file():
        raise UserError(f"no config.json in {folder}: model.text_encoder_path is a Gemma 3 folder")
    return folder


def _identity(cfg: ModelConfig, files: dict[str, list[Path]], text_dir: Path | None) -> str:
    """Names, sizes and mtimes of every input: another file gets another view."""
    paths = sorted({p.resolve() for group in files.values() for p in group})
    if text_dir:
        paths += sorted(p.resolve() for p in text_dir.iterdir() if p.is_file())
    if cfg.config_dir:
        paths += sorted(Path(cfg.config_dir).expanduser().resolve().rglob("*.json"))
    h = hashlib.sha256(cfg.ltx_version.encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _write_view(
    dest: Path,
    cfg: ModelConfig,
    version: Version,
    files: dict[str, list[Path]],
    text_dir: Path | None,
) -> None:
    links = _link_weights(dest, files)
    if text_dir is not None:
        _link_folder(text_dir, dest / "text_encoder", lambda n: n not in GEMMA_TOKENIZER_FILES)
        _link_folder(text_dir, dest / "tokenizer", lambda n: n in GEMMA_TOKENIZER_FILES)
        text_config = json.loads((text_dir / "config.json").read_text())
    else:
        text_config = write_gemma4_assets(files["text_encoder"][0], dest)
    for name in SINGLE_FILE_COMPONENTS:
        write_json(dest / name / "config.json", _config(cfg, version, name, text_config))
    write_json(dest / "scheduler" / "scheduler_config.json", SCHEDULER)
    write_json(dest / "model_index.json", _model_index(version, text_config))
    inference = links.pop("inference", None)
    view = {"ltx_version": version.name, "files": links}
    if inference:
        view["inference"] = {"transformer": inference, "sigmas": list(DISTILLED_SIGMAS)}
    write_json(dest / OFFICIAL_JSON, view)


def _link_weights(dest: Path, files: dict[str, list[Path]]) -> dict[str, list[str]]:
    """Symlink each weight file once into `dest/weights/`; component -> relative names."""
    (dest / WEIGHTS).mkdir()
    names: dict[Path, str] = {}
    for group in files.values():
        for p in group:
            if p.resolve() not in names:
                names[p.resolve()] = f"{WEIGHTS}/{len(names)}-{p.name}"
                os.symlink(p.resolve(), dest / names[p.resolve()])
    return {name: [names[p.resolve()] for p in group] for name, group in files.items()}


def _link_folder(src: Path, dest: Path, keep: Any) -> None:
    dest.mkdir()
    for p in src.iterdir():
        if p.is_file() and keep(p.name):
            os.symlink(p.resolve(), dest / p.name)


def _config(cfg: ModelConfig, version: Version, name: str, text: dict[str, Any]) -> dict:
    """The component's diffusers config: `model.config_dir`'s when given, else full size."""
    if cfg.config_dir:
        path = Path(cfg.config_dir).expanduser() / name / "config.json"
        if not path.is_file():
            raise UserError(f"missing {path}: model.config_dir must hold <component>/config.json")
        return json.loads(path.read_text())
    config = dict(version.configs[name])
    if name == "vocoder":
        config["_class_name"] = version.vocoder_class
    if name == "connectors" and version.text_encoder == "gemma4":
        inner = text.get("text_config", text)  # sized by the Gemma 4 the file carries
        config["caption_channels"] = inner["hidden_size"]
        config["text_proj_in_factor"] = inner["num_hidden_layers"] + 1
    return config


def _model_index(version: Version, text_config: dict[str, Any]) -> dict[str, Any]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    text_class = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES[text_config["model_type"]]
    return {
        "_class_name": "LTX2Pipeline",
        "transformer": ["diffusers", SINGLE_FILE_COMPONENTS["transformer"]],
        "vae": ["diffusers", SINGLE_FILE_COMPONENTS["vae"]],
        "audio_vae": ["diffusers", SINGLE_FILE_COMPONENTS["audio_vae"]],
        "connectors": ["ltx2", "LTX2TextConnectors"],
        "vocoder": ["ltx2", version.vocoder_class],
        "text_encoder": ["transformers", text_class],
        "tokenizer": ["transformers", "GemmaTokenizer"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    }


def distilled_sampler(pipe: Any, view: dict[str, Any]) -> None:
    """Sample as distilled checkpoints are deployed: the fixed sigma list, no dynamic shift
    (ltx-pipelines `DISTILLED_SIGMA_VALUES`; diffusers' converter's distilled scheduler)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    config = {**SCHEDULER, "use_dynamic_shifting": False, "shift_terminal": None}
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    pipe.ltx_sigmas = list(view["inference"]["sigmas"])


def read_view(path: Path) -> dict[str, Any] | None:
    """`official.json` of a view folder (None for a plain diffusers folder)."""
    file = Path(path) / OFFICIAL_JSON
    return json.loads(file.read_text()) if file.is_file() else None


def load_view_component(
    path: Path, view: dict[str, Any], name: str, dtype: str, inference: bool = False
) -> Any:
    """One component of a view folder, weights from the official files (`inference`: the
    distilled transformer renders use, when the view names one)."""
    files = [Path(path) / rel for rel in view["files"][name]]
    if inference and name in view.get("inference", {}):
        files = [Path(path) / rel for rel in view["inference"][name]]
    for f in files:
        if not f.exists():
            raise UserError(f"{f} points at {os.readlink(f)}, which is gone: restore it or re-run")
    config = json.loads((Path(path) / name / "config.json").read_text())
    if name == "text_encoder":
        return load_gemma4(files[0], config, dtype)
    return load_official(files, config, name, dtype, where=Path(path) / name / "config.json")
