"""Reading a component's weights tensor by tensor, for placement that must never hold a whole
float copy on the host: where each state-dict key lies (official files through
`ltx.single_file`'s key map, diffusers folders by their own keys), and a reader that copies
single tensors into fresh memory without mapping the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ltx.single_file import component_class, official_key, official_sources, refuse_mismatch
from stagekit.errors import UserError

DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


def component_sources(path: Path, name: str) -> tuple[Any, dict[str, tuple[Path, str]]] | None:
    """Component `name` of the model folder `path` built on the meta device (no weight
    allocated), and where each of its state-dict keys lies: (file, key in that file). Official
    files (a view folder) through the official key map, a diffusers folder by its own keys.
    Strict like `load_official`. None for a diffusers folder without safetensors (`.bin`)."""
    import json

    from accelerate import init_empty_weights

    from ltx.official import read_view

    path = Path(path)
    where = path / name / "config.json"
    config = json.loads(where.read_text())
    with init_empty_weights():
        model = component_class(name, config, where).from_config(
            {k: v for k, v in config.items() if not k.startswith("_")}
        )
    view = read_view(path)
    if view is not None and name in view["files"]:
        files = [path / rel for rel in view["files"][name]]
        wanted = {official_key(name, k): k for k in model.state_dict()}
        return model, official_sources(files, name, wanted, where)
    files = _diffusers_files(path / name)
    if files is None:
        return None
    return model, _diffusers_sources(files, set(model.state_dict()), where)


def _diffusers_files(folder: Path) -> dict[str, Path] | None:
    """File key -> file of a diffusers component folder (sharded through its index)."""
    import json

    index = folder / f"{DIFFUSERS_WEIGHTS}.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {key: folder / file for key, file in weight_map.items()}
    single = folder / DIFFUSERS_WEIGHTS
    if not single.is_file():
        return None
    return dict.fromkeys(TensorReader.header(single), single)


def _diffusers_sources(
    files: dict[str, Path], own: set[str], where: object
) -> dict[str, tuple[Path, str]]:
    missing = sorted(own - set(files))
    extra = sorted(set(files) - own)
    refuse_mismatch(sorted(set(files.values())), where, "transformer", missing, extra)
    return {key: (file, key) for key, file in files.items()}


class TensorReader:
    """Single tensors of safetensors files read with plain reads into fresh (aligned) memory:
    nothing is mapped, so the process holds only the tensors its caller keeps (the page cache
    is not its RSS; safetensors' own reader maps the file, and every page read stays resident
    until the file is closed)."""

    def __init__(self) -> None:
        self._headers: dict[Path, tuple[int, dict[str, Any]]] = {}

    @staticmethod
    def header(path: Path) -> dict[str, Any]:
        """Key -> {dtype, shape, data_offsets} of a safetensors file (metadata left out)."""
        return TensorReader._read_header(path)[1]

    @staticmethod
    def _read_header(path: Path) -> tuple[int, dict[str, Any]]:
        import json

        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            entries = json.loads(f.read(size))
        entries.pop("__metadata__", None)
        return 8 + size, entries

    def read(self, path: Path, key: str, shape: tuple[int, ...] | None = None) -> Any:
        """The tensor `key` of `path`; `shape`: the one expected, checked before reading."""
        import torch

        if path not in self._headers:
            self._headers[path] = self._read_header(path)
        start, entries = self._headers[path]
        entry = entries[key]
        if shape is not None and tuple(entry["shape"]) != tuple(shape):
            raise UserError(
                f"{path}: {key} is {list(entry['shape'])}, the model's config expects "
                f"{list(shape)} (another LTX version or size?)"
            )
        begin, end = entry["data_offsets"]
        data = torch.empty(end - begin, dtype=torch.uint8)
        view = memoryview(data.numpy())
        with open(path, "rb", buffering=0) as f:
            f.seek(start + begin)
            done = 0
            while done < len(view):
                n = f.readinto(view[done:])
                if not n:
                    raise UserError(f"{path} is truncated at {key}: re-copy the file")
                done += n
        dtype = getattr(torch, _SAFETENSORS_DTYPES[entry["dtype"]])
        return data.view(dtype).reshape(entry["shape"])
