"""Keep an inference surface's folder holding exactly the adapters it is entitled to.

`sync` puts, for every registered model (of one client with `client_slug`) whose `alias` points
at a version the folder may receive, that version's file for one consumer into `dest`, and
removes the files an earlier sync wrote whose model is no longer entitled. What it wrote is
listed in `dest/ltx-lora-sync.json` (the manifest); a file it did not write is never touched.
Each file is downloaded into a hidden folder in `dest`, verified against the version's recorded
sha256 and renamed into place, so a failed download (a full disk, a tampered store) leaves the
previous file where it was. A lock makes concurrent runs (cron) safe; a run with nothing new
changes nothing, not even the manifest.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.compat import check_base
from registry.describe import fetch_version
from registry.licence import refusal
from registry.names import split_model_name
from registry.pull import CONSUMERS, DIFFUSERS_NAME, fetch_verified, target_name
from registry.read import list_models
from registry.store import client_workspace
from stagekit.errors import UserError
from stagekit.files import write_json

if TYPE_CHECKING:
    from mlflow import MlflowClient

MANIFEST = "ltx-lora-sync.json"
LOCK = ".ltx-lora-sync.lock"


@dataclass
class SyncResult:
    """What one run did, by relative path (written, unchanged, removed) or model (skipped,
    failed: why). `busy`: another sync held the lock, nothing was done."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    busy: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


def sync(
    client: MlflowClient,
    dest: Path,
    *,
    alias: str = "champion",
    consumer: str = "comfyui",
    client_slug: str | None = None,
    base: str | None = None,
    allow_cross_version: bool = False,
) -> SyncResult:
    """Make `dest` hold `alias`'s file for `consumer` of every model it is entitled to: with
    `client_slug`, that client's models whose version allows `client` distribution; without,
    every model this user can see (an internal surface). `base`: skip versions not fit for
    that LTX version (registry.compat) unless `allow_cross_version`."""
    if consumer not in CONSUMERS:
        raise UserError(f"unknown consumer {consumer!r}: use one of {', '.join(CONSUMERS)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    result = SyncResult()
    with _lock(dest) as held:
        if not held:
            result.busy = True
            return result
        old = _read_manifest(dest)
        files = _owned(old, alias, consumer)
        level = "client" if client_slug else "internal"
        wanted: dict[str, Any] = {}
        for row in list_models(client, client_slug):
            if alias not in row["aliases"]:
                continue
            rel = _relpath(row["name"], consumer)
            try:
                mv, why = _entitled(client, row["name"], alias, level, base, allow_cross_version)
            except UserError as e:  # unreadable now (permissions, a server hiccup): keep its file
                result.failed[row["name"]] = str(e)
                continue
            if mv is None:
                result.skipped[row["name"]] = why
                continue
            wanted[rel] = mv
        new = _place(client, dest, wanted, files, consumer, result)
        # A model that failed keeps the file an earlier run wrote (if any).
        new |= {rel: e for rel, e in files.items() if e["name"] in result.failed}
        for rel in sorted(set(files) - set(new)):
            _remove(dest, rel, files[rel], result)
        manifest = {"alias": alias, "consumer": consumer, "client": client_slug, "files": new}
        if manifest != old:
            write_json(dest / MANIFEST, manifest)
    return result


def _entitled(
    client: MlflowClient, name: str, alias: str, level: str, base: str | None, allow: bool
) -> tuple[Any | None, str]:
    """The version `alias` names, or None and why the folder may not have it."""
    with client_workspace(client, split_model_name(name)[0]):
        mv = fetch_version(client, name, alias)
    if (why := refusal(mv, level)) is not None:
        return None, why
    if (archived := (mv.tags or {}).get("archived")) is not None:
        return None, f"version {mv.version} is archived ({archived})"
    try:
        check_base(mv, base, allow)
    except UserError as e:
        return None, str(e)
    return mv, ""


def _place(
    client: MlflowClient,
    dest: Path,
    wanted: dict[str, Any],
    files: dict[str, dict[str, Any]],
    consumer: str,
    result: SyncResult,
) -> dict[str, dict[str, Any]]:
    """Each wanted file in place (downloaded only when not already there); the new entries."""
    new = {}
    for rel, mv in sorted(wanted.items()):
        target = dest / rel
        have = files.get(rel)
        if have is not None and have["version"] == int(mv.version) and _untouched(target, have):
            new[rel] = have
            result.unchanged.append(rel)
            continue
        if have is None and target.exists():
            result.failed[mv.name] = (
                f"{target} exists and was not written by sync: left as it is (remove it, or "
                "sync into another folder)"
            )
            continue
        try:
            with client_workspace(client, split_model_name(mv.name)[0]):
                entry = fetch_verified(client, mv, consumer, target)
        except (UserError, OSError) as e:
            result.failed[mv.name] = _why(e)
            continue
        new[rel] = _entry(mv, target, entry)
        result.written.append(rel)
    return new


def _entry(mv: Any, target: Path, entry: dict[str, Any]) -> dict[str, Any]:
    st = target.stat()
    return {
        "name": mv.name,
        "version": int(mv.version),
        "run_id": mv.run_id,
        "sha256": entry["sha256"],
        "bytes": int(entry["bytes"]),
        "mtime_ns": st.st_mtime_ns,
        "synced_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _untouched(path: Path, entry: dict[str, Any]) -> bool:
    """The file sync wrote is still there, unchanged since (size and modification time)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    return st.st_size == entry["bytes"] and st.st_mtime_ns == entry["mtime_ns"]


def _remove(dest: Path, rel: str, entry: dict[str, Any], result: SyncResult) -> None:
    """Remove a file sync wrote that is no longer entitled (left alone if changed since)."""
    path = dest / rel
    if not path.exists():
        return
    if not _untouched(path, entry):
        result.failed[entry["name"]] = f"{path} changed since sync wrote it: not removed"
        return
    path.unlink()
    if path.parent != dest and not any(path.parent.iterdir()):
        path.parent.rmdir()  # the diffusers layout's per-model folder
    result.removed.append(rel)


def _relpath(name: str, consumer: str) -> str:
    """ComfyUI and ltx-pipelines: one file per model; diffusers: a folder per model (its loader
    looks for pytorch_lora_weights.safetensors in a folder)."""
    if consumer == "diffusers":
        return f"{name}/{DIFFUSERS_NAME}"
    return target_name(name, consumer)


def _owned(manifest: dict[str, Any], alias: str, consumer: str) -> dict[str, dict[str, Any]]:
    """The files an earlier sync of this folder wrote."""
    files = manifest.get("files") or {}
    if files and (manifest.get("alias"), manifest.get("consumer")) != (alias, consumer):
        raise UserError(
            f"this folder is synced with --alias {manifest.get('alias')} --for "
            f"{manifest.get('consumer')}: one folder holds one alias for one consumer"
        )
    return dict(files)


def _read_manifest(dest: Path) -> dict[str, Any]:
    path = dest / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON: restore it or remove the folder") from e
    return data if isinstance(data, dict) else {}


def _why(error: Exception) -> str:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return f"no room to write ({error.strerror}): the previous file, if any, is kept"
    return str(error)


@contextmanager
def _lock(dest: Path) -> Iterator[bool]:
    """True while this process holds the folder's lock; False at once if another one does."""
    fd = os.open(dest / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
