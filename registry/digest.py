"""sha256 of adapter files at the least cost: one read pass at most, none when training recorded it.

An adapter of the 19B model is ~400 MB per layout and sha256 runs at ~1 GB/s on one core, so
hashing is what registering and pulling cost. Training already hashes every file it exports
(train.json `files`); a copy can hash the bytes it moves instead of reading them a second time.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from stagekit.hashing import sha256_file

CHUNK = 1 << 20  # fits in L2: the write re-reads from cache what the hash just read


def copy_hashed(src: Path, dst: Path, chunk: int = CHUNK) -> tuple[str, int]:
    """Copy `src` to `dst` in one read pass and return (sha256, bytes) of what was written.

    The digest of chunk i is computed in a helper thread while the main thread writes chunk i
    and reads chunk i+1 (hashlib and file I/O release the GIL), so on two cores the copy costs
    about as long as the hash alone. Two buffers: a buffer is refilled only after its hash ended.
    """
    digest = hashlib.sha256()
    buffers = (bytearray(chunk), bytearray(chunk))
    total, pending = 0, None
    with (
        open(src, "rb", buffering=0) as fin,
        open(dst, "wb", buffering=0) as fout,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        for i in itertools.count():
            view = memoryview(buffers[i % 2])
            n = fin.readinto(view)
            _wait(pending)  # updates must run in order, and frees the other buffer
            if not n:
                break
            pending = pool.submit(digest.update, view[:n])
            _write_all(fout.fileno(), view[:n])
            total += n
    return digest.hexdigest(), total


def _wait(pending: Future[None] | None) -> None:
    if pending is not None:
        pending.result()


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def reusable_digest(path: Path, recorded: str | None, record: Path) -> str | None:
    """The sha256 training recorded for `path` in `record` (train.json), when it still holds:
    the file's last change (ctime, which no tool can set back) is strictly older than the record
    and its size is the one its safetensors header implies (not truncated). Else None: hash it.

    A stale reuse could only come from editing the adapter and then rewriting train.json by
    hand; a pull would still refuse that version, since pulls verify every byte."""
    if not recorded or len(recorded) != 64:
        return None
    stat = path.stat()
    if stat.st_ctime_ns >= record.stat().st_mtime_ns:
        return None
    return recorded if safetensors_size(path) == stat.st_size else None


def safetensors_size(path: Path) -> int | None:
    """The file size a safetensors header implies (8 + header + end of the last tensor), or
    None when the header cannot be read."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return 8 + n + max(ends, default=0)


def hash_files(paths: list[Path]) -> list[str]:
    """sha256 of each path, in parallel threads (hashlib releases the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(paths)))) as pool:
        return list(pool.map(sha256_file, paths))
