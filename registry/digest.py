"""sha256 of adapter files at the least cost: one read pass at most, none when training recorded it.

An adapter of the 19B model is ~400 MB per layout and sha256 runs at ~1 GB/s on one core, so
hashing is what registering and pulling cost. Training already hashes every file it exports
(train.json `files`); a copy can hash the bytes it moves instead of reading them a second time.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stagekit.hashing import sha256_file

CHUNK = 8 << 20  # large enough that a chunk's hand-off costs nothing next to its copy


FICLONE = 0x40049409  # linux/fs.h: make a file share another's extents, copy-on-write


def clone(src: Path, dst: Path) -> bool:
    """Make `dst` a reflink of `src` (XFS, btrfs, bcachefs, OCFS2): no bytes are copied, yet the
    two are separate files: a later write to either leaves the other as it was. False where the
    filesystem cannot (ext4, tmpfs, across filesystems); `dst` is then left empty."""
    with open(src, "rb", buffering=0) as fin, open(dst, "wb", buffering=0) as fout:
        return _clone_fd(fin.fileno(), fout.fileno())


def _clone_fd(fin: int, fout: int) -> bool:
    try:
        fcntl.ioctl(fout, FICLONE, fin)
    except OSError:
        return False
    return True


def copy_hashed(src: Path, dst: Path, chunk: int = CHUNK) -> tuple[str, int]:
    """Copy `src` to `dst` and return (sha256, bytes) of what `dst` now holds.

    Where the filesystem has reflinks, `dst` is a clone and is then hashed. Else the kernel copies
    each chunk (sendfile: no pass through Python buffers) and a helper thread reads that chunk
    back from `dst` (from the page cache) and hashes it while the kernel copies the next one: the
    digest is of the written bytes, and the copy costs about as long as the hash alone. Where the
    kernel cannot copy between these files, a read/hash/write loop does it."""
    digest = hashlib.sha256()
    with open(src, "rb", buffering=0) as fin, open(dst, "w+b", buffering=0) as fout:
        if _clone_fd(fin.fileno(), fout.fileno()):
            return hashlib.file_digest(fout, "sha256").hexdigest(), os.fstat(fout.fileno()).st_size
        try:
            total = _kernel_copy_hashed(fin.fileno(), fout.fileno(), digest, chunk)
        except OSError:  # e.g. a filesystem without sendfile between files: start over
            fin.seek(0)
            fout.seek(0)
            fout.truncate()
            digest = hashlib.sha256()
            total = _user_copy_hashed(fin, fout, digest, chunk)
    return digest.hexdigest(), total


def _kernel_copy_hashed(fin: int, fout: int, digest: Any, chunk: int) -> int:
    pending: Future[None] | None = None
    offset = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        while True:
            n = os.sendfile(fout, fin, offset, chunk)
            _wait(pending)  # the digest takes chunks in order
            if not n:
                break
            pending = pool.submit(lambda at, n: digest.update(os.pread(fout, n, at)), offset, n)
            offset += n
    return offset


def _user_copy_hashed(fin: Any, fout: Any, digest: Any, chunk: int) -> int:
    """Read, hash in a helper thread, write: two buffers, one refilled only after its hash."""
    buffers = (bytearray(chunk), bytearray(chunk))
    total, pending = 0, None
    with ThreadPoolExecutor(max_workers=1) as pool:
        for i in itertools.count():
            view = memoryview(buffers[i % 2])
            n = fin.readinto(view)
            _wait(pending)
            if not n:
                break
            pending = pool.submit(digest.update, view[:n])
            _write_all(fout.fileno(), view[:n])
            total += n
    return total


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
