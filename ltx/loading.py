"""Find, build and load LTX-2 models from local folders only (never a download)."""

from __future__ import annotations

import fcntl
import importlib
import json
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ltx import bases
from ltx.config import ModelConfig
from stagekit.errors import UserError
from stagekit.files import atomic_dir
from stagekit.hashing import sha256_json

MODEL_INDEX = "model_index.json"
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json")
# The config a component folder must hold (any one of the names); models need config.json.
CONFIG_FILES = {
    "scheduler": ("scheduler_config.json",),
    "tokenizer": ("tokenizer_config.json",),
    "processor": ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"),
}
NO_WEIGHTS = {"scheduler", "tokenizer", "processor"}
TORCH_DTYPES = ("float32", "bfloat16", "float16")


def tiny_model_dirname(seed: int, version: str = "2.0") -> str:
    """`tiny-seed<seed>-<hash of the tiny spec>[:12]` (`tiny<version>-…` for 2.3+): a spec
    change gets a new folder."""
    from ltx.tiny import tiny_spec

    if version == "2.0":
        return f"tiny-seed{seed}-{sha256_json(tiny_spec())[:12]}"
    return f"tiny{version}-seed{seed}-{sha256_json(tiny_spec(version=version))[:12]}"


def ensure_model(cfg: ModelConfig, models_dir: Path) -> Path:
    """The local diffusers folder of `cfg`'s model; builds the tiny model on first use."""
    if cfg.source == "tiny":
        return _ensure_tiny(cfg.seed, Path(models_dir), cfg.ltx_version)
    if cfg.source in bases.names():
        return _ensure_packaged(bases.packaged_base(cfg.source), Path(models_dir))
    if not cfg.path:
        raise UserError(
            f"model '{cfg.name}': source={cfg.source} needs model.path=<local "
            + ("diffusers folder>" if cfg.source == "diffusers" else "checkpoint or folder>")
        )
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise UserError(f"model.path {path} does not exist (nothing is downloaded)")
    if cfg.source == "official":
        from ltx.official import ensure_official

        return ensure_official(cfg, Path(models_dir))
    check_model_folder(path)
    _check_folder_version(path, cfg.ltx_version)
    return path


def _check_folder_version(path: Path, configured: str) -> None:
    """A diffusers folder of another version than the config names is refused."""
    from ltx.versions import check_version

    config = json.loads((path / "transformer" / "config.json").read_text())
    if config.get("use_keyframes_abs_pos_embedding"):
        found = "2.5"
    elif config.get("gated_attn"):
        found = "2.3"
    else:
        found = "2.0"
    check_version(configured, found, path / "transformer" / "config.json")


def _ensure_tiny(seed: int, models_dir: Path, version: str = "2.0") -> Path:
    from ltx.tiny_build import save_tiny_model

    dest = models_dir / tiny_model_dirname(seed, version)
    if (dest / MODEL_INDEX).is_file():
        return dest
    # The lock makes parallel workers (torchrun, multirun) build once and never swap the folder
    # under a reader.
    with _file_lock(models_dir / f".{dest.name}.lock"):
        if not (dest / MODEL_INDEX).is_file():
            with atomic_dir(dest) as tmp:
                if version == "2.0":
                    save_tiny_model(tmp, seed)
                else:
                    save_tiny_model(tmp, seed, version=version)
    return dest


def _ensure_packaged(base: bases.PackagedBase, models_dir: Path) -> Path:
    """A packaged base's folder (the demo model's), built once from the weights it ships into
    `models_dir/<its dirname>/`."""
    dest = models_dir / base.dirname()
    if (dest / MODEL_INDEX).is_file():
        return dest
    with _file_lock(models_dir / f".{dest.name}.lock"):
        if not (dest / MODEL_INDEX).is_file():
            with atomic_dir(dest) as tmp:
                base.save(tmp)
    return dest


@contextmanager
def _file_lock(path: Path) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def model_index(path: Path) -> dict[str, tuple[str, str]]:
    """Component name -> (library, class) for each component present in `model_index.json`."""
    index = json.loads((Path(path) / MODEL_INDEX).read_text())
    return {
        name: (spec[0], spec[1])
        for name, spec in index.items()
        if not name.startswith("_") and isinstance(spec, list) and spec[0] is not None
    }


def check_model_folder(path: Path) -> None:
    """Raise UserError naming the first missing file of a diffusers model folder."""
    from ltx.official import is_official, read_view

    path = Path(path)
    if not (path / MODEL_INDEX).is_file():
        hint = (
            "it holds Lightricks' official files: use model.source=official (model=ltx2_3, …)"
            if is_official(path)
            else "model.path must be a diffusers folder, an official checkpoint with "
            "model.source=official, or use model=demo"
        )
        raise UserError(f"no {MODEL_INDEX} in {path}: {hint}")
    view = read_view(path)
    for name in model_index(path):
        _check_component(path, name, weighted=view is None or name not in view["files"])


def _check_component(path: Path, name: str, weighted: bool = True) -> None:
    folder = path / name
    names = CONFIG_FILES.get(name, ("config.json",))
    if not any((folder / n).is_file() for n in names):
        raise UserError(f"missing {name}/{' or '.join(names)} in model folder {path}")
    if name in NO_WEIGHTS or not weighted:
        return
    files = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    if not any(f.endswith(WEIGHT_SUFFIXES) for f in files):
        raise UserError(
            f"missing weights for {name}: no *.safetensors (or *.bin) in {folder}; "
            "copy the component's weight files there"
        )


def torch_dtype(dtype: str) -> Any:
    """'float32' | 'bfloat16' | 'float16' -> torch dtype."""
    import torch

    if dtype not in TORCH_DTYPES:
        raise UserError(f"dtype '{dtype}' is not one of {', '.join(TORCH_DTYPES)}")
    return getattr(torch, dtype)


def load_pipeline(path: Path, dtype: str = "float32", inference: bool = False) -> Any:
    """The whole `LTX2Pipeline` from a local folder (CPU; move it with `.to(device)`).
    `inference`: renders, which use `model.inference_path`'s distilled transformer and its
    sampler when the model names one; training and export checks keep the dev weights."""
    from diffusers import LTX2Pipeline

    from ltx.official import distilled_sampler, load_view_component, read_view

    check_model_folder(Path(path))
    view = read_view(path)
    if view is not None:  # official files: weights through their key map
        parts = load_components(path, model_index(Path(path)), dtype)
        if inference and "inference" in view:
            parts["transformer"] = load_view_component(path, view, "transformer", dtype, True)
        pipe = LTX2Pipeline(**parts)
        if inference and "inference" in view:
            distilled_sampler(pipe, view)
    else:
        pipe = LTX2Pipeline.from_pretrained(
            str(path), dtype=torch_dtype(dtype), local_files_only=True
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_components(path: Path, names: Iterable[str], dtype: str = "float32") -> dict[str, Any]:
    """Only the named components (e.g. `["text_encoder", "tokenizer", "connectors"]`)."""
    path = Path(path)
    check_model_folder(path)
    index = model_index(path)
    unknown = [n for n in names if n not in index]
    if unknown:
        raise UserError(f"{path} has no component(s) {unknown}; it has {sorted(index)}")
    return {name: _load_component(path, name, *index[name], dtype) for name in names}


def _load_component(path: Path, name: str, library: str, cls_name: str, dtype: str) -> Any:
    from ltx.official import load_view_component, read_view

    view = read_view(path)
    if view is not None and name in view["files"]:
        return load_view_component(path, view, name, dtype)
    cls = getattr(_library_module(library), cls_name)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if name not in NO_WEIGHTS:
        kwargs["dtype"] = torch_dtype(dtype)
    obj = cls.from_pretrained(str(path / name), **kwargs)
    return obj.eval() if hasattr(obj, "eval") else obj


def component(pipe_or_components: Any, name: str) -> Any:
    """`name` from a pipeline or from a `load_components` dict, with a hint when missing."""
    if isinstance(pipe_or_components, dict):
        if name not in pipe_or_components:
            raise KeyError(f"component '{name}' not loaded: load_components(path, [..., '{name}'])")
        return pipe_or_components[name]
    return getattr(pipe_or_components, name)


def _library_module(library: str) -> Any:
    # diffusers writes pipeline-local classes (connectors, vocoder) as library "ltx2".
    if library in ("diffusers", "transformers"):
        return importlib.import_module(library)
    return importlib.import_module(f"diffusers.pipelines.{library}")


def weight_bytes(obj: Any) -> int:
    """Bytes of a component's parameters and buffers (0 for tokenizers and schedulers)."""
    if not hasattr(obj, "parameters"):
        return 0
    tensors = [*obj.parameters(), *obj.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


# A full gc pass costs ~0.3 s with diffusers and transformers imported: worth it for real
# weights, not for the tiny model (whose modules refcounting frees at once anyway).
COLLECT_ABOVE_BYTES = 256 << 20


def release(components: dict[str, Any]) -> None:
    """Drop the loaded components and give their memory back (host and GPU) before the next
    phase loads its own: preprocessing holds one phase's weights at a time."""
    import gc

    import torch

    size = sum(weight_bytes(c) for c in components.values())
    components.clear()
    if size > COLLECT_ABOVE_BYTES:
        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
