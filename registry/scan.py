"""Scan every tensor of an adapter before it is registered: a broken adapter never reaches users.

Refused, with the keys named: any NaN or Inf; every `lora_B` of the adapter all zero (the
update is exactly nothing: training never moved it); an update whose every module is below
numeric noise (‖ΔW‖_F ≤ float32 eps · ‖W‖_F: merged into the base it changes nothing, even in
float32). The base norms come from the export's `base_weight_norms` header; a file without it
gets the NaN/Inf and zero checks only. Torch-free (numpy on the raw bytes; bf16 widened by a bit
shift), so the registry stays light.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stagekit.errors import UserError

FLOAT_EPS = float(np.finfo(np.float32).eps)
_NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}
_CHUNK = 1 << 24  # elements per read: bounded memory on a multi-GB file
_SHOWN = 6  # keys named in a message; the rest counted
BASE_NORMS_KEY = "base_weight_norms"  # written by trainer.export


def check_adapter(files: dict[str, Path], main: str = "adapter.safetensors") -> None:
    """A UserError naming the keys when any safetensors file in `files` holds NaN/Inf, or the
    `main` file's update is all zero or below numeric noise. Nothing else is read."""
    problems = []
    for rel, path in sorted(files.items()):
        if rel.endswith(".safetensors"):
            bad = [k for k, t in _tensors(path) if not _finite(t)]
            problems += [f"{rel}: NaN or Inf in {_names(bad)}"] if bad else []
    if main in files and not problems:
        problems += _update_problems(files[main], main)
    if problems:
        raise UserError(
            "adapter refused, nothing was registered: "
            + "; ".join(problems)
            + ". Retrain (lower the learning rate, check the data), then register again"
        )


def _update_problems(path: Path, rel: str) -> list[str]:
    tensors = dict(_tensors(path))
    b_keys = sorted(k for k in tensors if ".lora_B." in k)
    if b_keys and all(not np.any(_values(tensors[k])) for k in b_keys):
        return [f"{rel}: every lora_B is all zero ({_names(b_keys)}): the adapter changes nothing"]
    norms = json.loads(_metadata(path).get(BASE_NORMS_KEY) or "{}")
    updates = _update_norms(tensors)
    if not norms or not updates:
        return []
    quiet = [m for m, u in updates.items() if m in norms and u <= FLOAT_EPS * norms[m]]
    if len(quiet) == len(updates):
        return [
            f"{rel}: the merged update of every module is below numeric noise "
            f"(‖ΔW‖ ≤ {FLOAT_EPS:.1e}·‖W‖: {_names(quiet)})"
        ]
    return []


def _update_norms(tensors: dict[str, tuple]) -> dict[str, float]:
    """{module: ‖B·A‖_F} of each LoRA pair, through the r×r products (no out×in matrix):
    ‖BA‖² = Σ (BᵀB) ⊙ (AAᵀ)."""
    out = {}
    for key in tensors:
        module = key.removesuffix(".lora_A.weight")
        if key.endswith(".lora_A.weight") and module + ".lora_B.weight" in tensors:
            a = _values(tensors[key]).astype(np.float64)
            b = _values(tensors[module + ".lora_B.weight"]).astype(np.float64)
            gram = float(np.sum((b.T @ b) * (a @ a.T)))
            out[module.removeprefix("transformer.")] = max(gram, 0.0) ** 0.5
    return out


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def _header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n)), 8 + n


def _metadata(path: Path) -> dict[str, str]:
    return _header(path)[0].get("__metadata__") or {}


def _tensors(path: Path) -> Iterator[tuple[str, tuple]]:
    """(key, (path, dtype, shape, byte offset)) of each float tensor, file order."""
    header, start = _header(path)
    for key, info in header.items():
        if key != "__metadata__" and (info["dtype"] in _NUMPY or info["dtype"] == "BF16"):
            yield key, (path, info["dtype"], tuple(info["shape"]), start + info["data_offsets"][0])


def _values(tensor: tuple) -> np.ndarray:
    """The whole tensor as float32 (float64 kept), read from the file."""
    return np.concatenate([c for c in _chunks(tensor)] or [np.zeros(0)]).reshape(tensor[2])


def _finite(tensor: tuple) -> bool:
    return all(np.isfinite(chunk).all() for chunk in _chunks(tensor))


def _chunks(tensor: tuple) -> Iterator[np.ndarray]:
    path, dtype, shape, offset = tensor
    count = int(np.prod(shape, dtype=np.int64))
    raw = (
        np.memmap(
            path,
            dtype="<u2" if dtype == "BF16" else _NUMPY[dtype],
            mode="r",
            offset=offset,
            shape=(count,),
        )
        if count
        else np.zeros(0)
    )
    for i in range(0, count, _CHUNK):
        part = np.asarray(raw[i : i + _CHUNK])
        yield (part.astype(np.uint32) << 16).view(np.float32) if dtype == "BF16" else part
