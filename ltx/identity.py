"""Content hashes that identify a model folder and its components (sha256, hex).

Hashing a 40 GB model takes minutes, so per-file digests are cached in a JSON file inside the
folder, keyed by (relative path, size, mtime_ns); the cache file itself is never hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

from stagekit.files import read_json, write_json
from stagekit.hashing import sha256_file

CACHE_NAME = ".ltx-lora-hashes.json"


def model_hash(path: Path) -> str:
    """Hash of every weight and config file of a model folder (names and contents)."""
    return _tree_hash(Path(path), Path(path))


def component_hash(path: Path, component: str) -> str:
    """Hash of one component's files, e.g. `component_hash(path, "vae")`."""
    root = Path(path)
    folder = root / component
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {root} has no component '{component}'")
    return _tree_hash(root, folder)


def _tree_hash(root: Path, folder: Path) -> str:
    files = _files(folder)
    digests = _digests(root, files)
    h = hashlib.sha256()
    for p in files:
        rel = p.relative_to(folder).as_posix()
        h.update(rel.encode() + b"\0" + digests[p.relative_to(root).as_posix()].encode() + b"\n")
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    # Dotfiles (our cache, editor and lock files) are not part of the model.
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _digests(root: Path, files: list[Path]) -> dict[str, str]:
    """sha256 per file (relative to `root`), reusing cached digests of unchanged files."""
    cache_path = root / CACHE_NAME
    cache = _read_cache(cache_path)
    out: dict[str, str] = {}
    changed = False
    for p in files:
        rel = p.relative_to(root).as_posix()
        st = p.stat()
        entry = cache.get(rel)
        if entry and entry["size"] == st.st_size and entry["mtime_ns"] == st.st_mtime_ns:
            out[rel] = entry["sha256"]
            continue
        out[rel] = sha256_file(p)
        cache[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": out[rel]}
        changed = True
    if changed:
        _write_cache(cache_path, cache)
    return out


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, cache: dict[str, Any]) -> None:
    # A read-only model folder is fine: we just hash again next time.
    with contextlib.suppress(OSError):
        write_json(path, cache)
