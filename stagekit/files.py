"""Atomic file writes and JSON-lines helpers: a reader never sees a half-written file.

Atomic writes are also durable by default: the new file(s) and their folder are fsynced around
the rename, so after a power cut a reader finds the old content or the new, never an empty or
zero-filled file under the final name. A full disk during any of it is a `DiskFullError` (one
line naming the path and the space left) and leaves the destination as it was.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stagekit.errors import DiskFullError

_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def atomic_path(dest: Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it over `dest` only if the block succeeds.
    `durable=False` skips the fsyncs, for callers that write many files and `sync_tree` once."""
    dest = Path(dest)
    with disk_full_errors(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            # mkstemp makes 0600, and so do writers that replace the file (safetensors): give
            # the user's usual mode, so a consumer running as another user can read an export
            tmp_path.chmod(0o666 & ~_umask())
            if durable:
                fsync_path(tmp_path)  # the data is on disk before the name points at it
            os.replace(tmp_path, dest)
            if durable:
                fsync_path(dest.parent)  # and the rename itself survives a power cut
        finally:
            tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(dest: Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `dest`; swap it in for `dest` only if the block succeeds.
    `durable`: as in `atomic_path`, for every file under the folder."""
    dest = Path(dest)
    with disk_full_errors(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        tmp.chmod(0o777 & ~_umask())
        try:
            yield tmp
            if durable:
                sync_tree(tmp)
            _swap(tmp, dest)
            if durable:
                fsync_path(dest.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _swap(tmp: Path, dest: Path) -> None:
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def fsync_path(path: Path) -> None:
    """fsync one file or folder (a folder's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        # some filesystems (a few FUSE and network ones) refuse fsync on a folder: nothing to do
        if not (e.errno == errno.EINVAL and Path(path).is_dir()):
            raise
    finally:
        os.close(fd)


def sync_tree(root: Path) -> None:
    """fsync every file under `root`, then every folder, deepest first, `root` last."""
    folders = []
    for here, _, files in os.walk(root):
        folders.append(Path(here))
        for name in files:
            fsync_path(Path(here) / name)
    for folder in reversed(folders):
        fsync_path(folder)


@contextmanager
def disk_full_errors(dest: Path) -> Iterator[None]:
    """A full disk (or quota) while writing `dest` as a `DiskFullError`; other errors pass."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        if not _is_disk_full(e):
            raise
        raise DiskFullError(dest, _free_bytes(Path(dest))) from e


def _is_disk_full(e: BaseException | None) -> bool:
    """ENOSPC/EDQUOT, also through libraries that raise their own type with the OS message
    (safetensors' Rust writer: `SafetensorError: ... No space left on device`)."""
    seen = 0
    while e is not None and seen < 8:  # the chain of causes, as far as any library keeps it
        if isinstance(e, OSError) and e.errno in _FULL:
            return True
        if any(os.strerror(code) in str(e) for code in _FULL):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _free_bytes(path: Path) -> int:
    """Space an unprivileged writer has left on `path`'s filesystem (its nearest existing
    ancestor: the destination may not exist yet)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(dest: Path, text: str, *, durable: bool = True) -> None:
    with atomic_path(dest, durable=durable) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(dest: Path, obj: Any, *, durable: bool = True) -> None:
    write_text(dest, json.dumps(obj, indent=2, sort_keys=True) + "\n", durable=durable)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(dest: Path, rows: Iterable[dict[str, Any]], *, durable: bool = True) -> None:
    write_text(dest, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), durable=durable)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
