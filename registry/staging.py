"""Where a pull stages its download: on the destination's filesystem, never inside the folder a
consumer scans (ComfyUI lists the sub-folders of `loras/` too), so a killed pull leaves nothing
a consumer can see, and the file lands by one `os.replace`.

The staging folder is the per-user cache (`$XDG_CACHE_HOME/ltx-lora/staging`, else
`~/.cache/…`) when it sits on the destination's device, else a `.ltx-lora-staging` folder beside
the destination. Each pull stages in `<host>-<pid>-<random>/`; the next pull removes entries
whose process is gone (killed pulls), so nothing piles up.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STAGING_DIR = ".ltx-lora-staging"
FOREIGN_AGE_S = 24 * 3600  # another host's entry on a shared filesystem: removed after a day
LEGACY_AGE_S = 600  # `.<name>.<random>.pull/` folders that earlier versions left in the destination


@contextmanager
def staging_for(dest: Path) -> Iterator[Path]:
    """A fresh, empty folder on `dest`'s filesystem outside `dest`; removed afterwards."""
    dest.mkdir(parents=True, exist_ok=True)
    root = staging_root(dest)
    sweep(root)
    sweep_legacy(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_host()}-{os.getpid()}-", dir=root))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def staging_root(dest: Path) -> Path:
    """The per-user cache's staging folder if it shares `dest`'s device, else one beside
    `dest`; when `dest` is a mount point that differs too, land() copies across."""
    device = dest.stat().st_dev
    sibling = dest.resolve().parent / STAGING_DIR
    for root in (_user_cache(), sibling):
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:  # not writable: try the next
            continue
        if root.stat().st_dev == device:
            return root
    sibling.mkdir(parents=True, exist_ok=True)  # its error, if even that cannot be made
    return sibling


def land(staged: Path, target: Path) -> None:
    """Move `staged` to `target` in one rename. Across filesystems (`dest` a mount point) it is
    first copied to a hidden `.partial` file in the destination, which no consumer lists
    (they list by `.safetensors` suffix), then renamed."""
    if staged.stat().st_dev != target.parent.stat().st_dev:
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            shutil.copyfile(staged, partial)
            staged = partial
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    os.replace(staged, target)


def sweep(root: Path) -> list[Path]:
    """Remove staging entries of pulls that are no longer running; the removed paths."""
    gone = [p for p in _entries(root) if _abandoned(p)]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


def sweep_legacy(dest: Path) -> None:
    """Remove what earlier versions left in the destination itself: `.<name>.<random>.pull/`
    folders and `.partial` files of killed pulls (older than LEGACY_AGE_S: not a live one)."""
    cutoff = time.time() - LEGACY_AGE_S
    for path in dest.glob(".*"):
        legacy = path.name.endswith((".pull", ".partial"))
        if not legacy or _mtime(path) >= cutoff:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _entries(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        return []


def _abandoned(path: Path) -> bool:
    host, _, rest = path.name.rpartition("-")[0].rpartition("-")
    pid = rest if rest.isdigit() else ""
    if host != _host() or not pid:
        return _mtime(path) < time.time() - FOREIGN_AGE_S
    return not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ltx-lora" / "staging"
