"""`ltx-lora dataset status`: the DVC hash of a dataset's raw clips, the key lineage records.

Offline and read-only: the hash recorded in `raw.dvc` is compared with one computed now by
DVC's own hashing (dvc-data), so an edit since `dvc add` is caught before it trains anything.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from stagekit.errors import UserError


def dataset_status(dataset_dir: Path) -> dict[str, Any]:
    """{dataset, state (tracked | modified | untracked), dvc_hash, recorded_hash, nfiles, size}.

    `dvc_hash` is the hash of raw/ as it is now, in DVC's `<md5>.dir` form.
    """
    dataset_dir = Path(dataset_dir)
    raw = dataset_dir / "raw"
    if not raw.is_dir():
        raise UserError(f"{raw} does not exist: put the dataset's clips there")
    recorded = _recorded(dataset_dir / "raw.dvc")
    now, nfiles, size = dvc_dir_hash(raw)
    state = "untracked" if recorded is None else ("tracked" if recorded == now else "modified")
    return {
        "dataset": dataset_dir.name,
        "state": state,
        "dvc_hash": now,
        "recorded_hash": recorded,
        "nfiles": nfiles,
        "size": size,
    }


def format_status(status: dict[str, Any]) -> str:
    """What `ltx-lora dataset status` prints: the hash, then what to do if it is not tracked."""
    name = status["dataset"]
    lines = [
        f"dataset   {name}",
        f"raw hash  {status['dvc_hash']}  ({status['nfiles']} files, {status['size']} bytes)",
        f"state     {status['state']}",
    ]
    if status["state"] == "untracked":
        lines.append(f"track it: dvc add datasets/{name}/raw && git add datasets/{name}/raw.dvc")
    elif status["state"] == "modified":
        lines.append(
            f"raw/ changed since `dvc add` (recorded {status['recorded_hash']}): "
            f"run dvc add datasets/{name}/raw to record the new version"
        )
    return "\n".join(lines)


def dvc_dir_hash(folder: Path) -> tuple[str, int, int]:
    """(`<md5>.dir`, files, bytes) of a folder exactly as `dvc add` computes it."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:  # DVC's object db, thrown away
        _, meta, obj = build(HashFileDB(fs, scratch), str(folder), fs, "md5")
    return str(obj.hash_info.value), int(meta.nfiles or 0), int(meta.size or 0)


def _recorded(dvc_file: Path) -> str | None:
    if not dvc_file.is_file():
        return None
    data = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    outs = data.get("outs") or []
    if not outs or "md5" not in outs[0]:
        raise UserError(f"{dvc_file} has no md5 for raw/: run dvc add {dvc_file.parent}/raw again")
    return str(outs[0]["md5"])
