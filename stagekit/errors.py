"""Errors meant for the user: one line that says what is wrong and what to do."""

from __future__ import annotations

import errno
import os


class UserError(Exception):
    """Bad input the user can fix; the CLI prints it as one line and exits 1."""

    exit_code = 1


class ConfigError(UserError):
    """An unknown or mistyped config key; exit 2 like any usage error."""

    exit_code = 2


class DiskFullError(UserError, OSError):
    """No space left while writing `path`: one line naming it and the space left there. Still
    an OSError (ENOSPC), so code that handles I/O failures keeps handling it."""

    def __init__(self, path: os.PathLike | str, free_bytes: int) -> None:
        OSError.__init__(self, errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.path, self.free_bytes = str(path), free_bytes
        self.message = (
            f"no space left on the device writing {path} ({_size(free_bytes)} free there): "
            "free some space or write elsewhere, then re-run; nothing was half-written"
        )

    def __str__(self) -> str:
        return self.message


def _size(n: float) -> str:
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"
