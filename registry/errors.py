"""Server refusals, an unreachable server and a full disk as one-line UserErrors.

MLflow raises `MlflowException("API request to endpoint … failed with error code 403 …")`,
requests' ConnectionError or sqlite's "database or disk is full"; the CLI prints a UserError as
one line, anything else as a traceback. These say who was refused what, or where the space ran out.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stagekit.errors import DiskFullError, UserError

_SQLITE_FULL = "database or disk is full"
_HTTP_CODE = re.compile(r"error code (\d{3})")


@contextmanager
def one_line_errors(
    action: str, uri: str | None = None, client: str | None = None
) -> Iterator[None]:
    """Inside, a refusal, a server out of reach or a full disk becomes a UserError naming
    `action` (e.g. "registry rollback acme.mascot"), the user and `client`, or the server's
    `uri`, or the full path and its free space. Other errors pass unchanged."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:  # requests' errors are OSErrors too: one path for all
        converted = _converted(e, action, uri, client)
        if converted is None:
            raise
        raise converted from e


def _converted(e: Exception, action: str, uri: str | None, client: str | None) -> UserError | None:
    text = str(e)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return _disk_full(Path(e.filename) if e.filename else _store_dir(uri))
    if _SQLITE_FULL in text:
        from registry.store import sqlite_path

        return _disk_full(sqlite_path(uri or "") or _store_dir(uri))
    code = _status(e, text)
    if code in (401, 403):
        return UserError(_refusal(code, action, client))
    if _unreachable(e, text, uri):
        where = uri or os.environ.get("MLFLOW_TRACKING_URI") or "the tracking server"
        return UserError(f"{action}: cannot reach the MLflow server at {where}: is it running?")
    return None


def _status(e: Exception, text: str) -> int | None:
    """The HTTP status of a failed MLflow REST call or artifact transfer, if this is one."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(status, int) and status >= 400:  # requests' HTTPError (artifact uploads)
        return status
    if getattr(e, "error_code", "") == "PERMISSION_DENIED":
        return 403
    if getattr(e, "error_code", "") == "UNAUTHENTICATED":
        return 401
    found = _HTTP_CODE.search(text)
    return int(found.group(1)) if found and type(e).__name__ == "MlflowException" else None


def _refusal(code: int, action: str, client: str | None) -> str:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "(no user set)"
    if code == 401:
        return (
            f"the registry server did not accept user {user!r} for {action} (HTTP 401): check "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
        )
    scope = f" on client {client!r}" if client else ""
    return (
        f"the registry server refused {action} to user {user!r}{scope} (HTTP 403 permission "
        "denied): ask the registry admin for access, or use that client's own user"
    )


def _unreachable(e: Exception, text: str, uri: str | None) -> bool:
    """A connection to a tracking server that failed (requests' or urllib3's errors, or
    MLflow's message after its retries). Never for a local store: nothing to reach there."""
    if uri is not None and not uri.startswith(("http://", "https://")):
        return False
    http = [c for c in _chain(e) if type(c).__module__.startswith(("requests", "urllib3"))]
    names = {type(c).__name__ for c in http}
    return bool(names & {"ConnectionError", "MaxRetryError", "NewConnectionError"}) or (
        "Max retries exceeded" in text and "Connection refused" in text
    )


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = e
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _store_dir(uri: str | None) -> Path:
    """Where a write with no file named (a copy, a library's own error) went: the local
    store's folder, else the current one."""
    from registry.store import sqlite_path

    db = sqlite_path(uri or "")
    return db.parent if db is not None else Path.cwd()


def _disk_full(path: Path) -> DiskFullError:
    """The DiskFullError of `path`: the free space of its nearest existing folder."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = 0
    return DiskFullError(path, free)
