"""Where the registry lives: tracking URIs, an MLflow client whose schema is ready, the experiment.

MLflow is imported inside functions, after its telemetry switch is set: importing it is what
starts the telemetry client.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from stagekit.errors import UserError

if TYPE_CHECKING:
    from mlflow import MlflowClient

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
DEFAULT_EXPERIMENT = "ltx-lora"
_SQLITE = "sqlite:///"

# sqlite URIs whose schema this process has seen complete: later opens skip the file lock.
_schema_ready: set[str] = set()
# Tracking servers probed by this process: uri -> their server-info (workspaces on or off).
_server_info: dict[str, dict[str, Any]] = {}

# MLflow's own HTTP client retries 7 times with a backoff factor of 2 (minutes when a server is
# down); these bound that to seconds. A user's own setting of these variables wins.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "120",
}
PROBE_TRIES = 3
PROBE_TIMEOUT_S = 5.0


def local_tracking_uri(mlflow_dir: Path) -> str:
    """`sqlite:///<abs>/mlflow.db`: the embedded registry (artifacts in `mlflow_dir/artifacts`)."""
    return _SQLITE + (Path(mlflow_dir).resolve() / DB_NAME).as_posix()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative paths from the cwd), else None."""
    if not uri.startswith(_SQLITE):
        return None
    path = unquote(uri[len(_SQLITE) :].split("?", 1)[0])
    return None if path in ("", ":memory:") else Path(path).resolve()


def disable_telemetry() -> None:
    """MLflow telemetry off unless the user opted in explicitly; drops a client made earlier."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.telemetry import set_telemetry_client

    set_telemetry_client()  # re-reads the switch: mlflow may have been imported before it was set


def ensure_schema(uri: str) -> None:
    """Create a sqlite database's tables once, under an exclusive file lock. No-op for servers."""
    db = sqlite_path(uri)
    if db is None or uri in _schema_ready:
        return
    disable_telemetry()
    from mlflow import MlflowClient

    db.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(db.with_name(db.name + ".lock")):
        relocate(db)  # a moved or copied workspace: its own files, not the old place's
        # MLflow creates missing tables when it builds a store, and processes that do so at once
        # all fail (FIELD-NOTES), so the first one does it here while the others wait.
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_registered_models(max_results=1)  # builds the registry store too
    _schema_ready.add(uri)


# Where a local store records absolute artifact locations (file:// URIs).
_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)


def relocate(db: Path) -> list[str]:
    """Point a local store's recorded artifact locations at `<db dir>/artifacts` when the
    workspace was moved or copied since they were written; the old roots it replaced.

    MLflow stores absolute file:// URIs, so a moved workspace would keep reading and writing
    the old place. An old root is replaced only when it has the default layout (`…/artifacts`,
    beside a database folder of the same name) and its experiment folder is present here:
    the files came along. Nothing at the old place is read or written."""
    if not db.is_file():
        return []
    here = (db.parent / ARTIFACTS_DIR).resolve()
    with closing(sqlite3.connect(db, timeout=60)) as conn, conn:
        try:
            rows = conn.execute("SELECT artifact_location FROM experiments").fetchall()
        except sqlite3.OperationalError:
            return []  # no tables yet: a new store
        olds = sorted({root for (loc,) in rows if (root := _moved_root(loc, here, db))})
        for old in olds:
            _replace_prefix(conn, old + "/", here.as_uri() + "/")
    return olds


def _moved_root(location: str | None, here: Path, db: Path) -> str | None:
    """`location`'s artifact root as a file:// URI when it is another place's default root
    whose experiment folder exists under `here`, else None."""
    if not location or not location.startswith("file://"):
        return None
    folder = Path(unquote(urlparse(location).path))
    root = folder.parent
    default_layout = root.name == ARTIFACTS_DIR and root.parent.name == db.parent.name
    if not default_layout or root == here or not (here / folder.name).is_dir():
        return None
    return location[: -len(folder.name) - 1]


def _replace_prefix(conn: sqlite3.Connection, old: str, new: str) -> None:
    for table, column in _LOCATION_COLUMNS:
        try:
            conn.execute(
                f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                f"WHERE substr({column}, 1, ?) = ?",
                (new, len(old) + 1, len(old), old),
            )
        except sqlite3.OperationalError:  # a table or column this MLflow version lacks
            continue


def open_client(
    uri: str, artifact_root: Path | None = None, experiment: str | None = DEFAULT_EXPERIMENT
) -> MlflowClient:
    """A client on `uri` with its schema ready and `experiment` present (None: not checked).

    `artifact_root`: where a new experiment keeps artifacts; None means `<db dir>/artifacts` for
    sqlite and the server's own default for a tracking server. A server is probed first (bounded
    retries): a server that is down is a UserError before anything is made. On a server with
    workspaces, experiments live in each client's workspace: they are made per registration."""
    ensure_schema(uri)
    disable_telemetry()
    if is_server(uri):
        probe_server(uri)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if experiment is not None and not (workspaces_enabled(uri) and current_workspace() is None):
        ensure_experiment(client, experiment, artifact_root)
    return client


def is_server(uri: str) -> bool:
    """True for an MLflow tracking server (`http(s)://`)."""
    return uri.startswith(("http://", "https://"))


def probe_server(uri: str, tries: int = PROBE_TRIES) -> dict[str, Any]:
    """The server's `server-info` (cached per process), retried with backoff; a UserError when
    it cannot be reached, so a command fails fast instead of after MLflow's minutes of retries."""
    if uri in _server_info:
        return _server_info[uri]
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    request = _info_request(uri)
    error: Exception | None = None
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as resp:
                _server_info[uri] = json.loads(resp.read() or b"{}")
                return _server_info[uri]
        except urllib.error.HTTPError as e:
            if e.code < 500:  # it answered: an older server without the endpoint, say
                _server_info[uri] = {}
                return _server_info[uri]
            error = e
        except (urllib.error.URLError, OSError, ValueError) as e:
            error = e
            if attempt + 1 < tries:
                time.sleep(0.5 * 2**attempt)
    raise UserError(
        f"cannot reach the MLflow server at {uri} ({tries} tries: {_reason(error)}): start it "
        "(`ltx-lora registry serve`, see docs/registry.md) or set MLFLOW_TRACKING_URI"
    )


def workspaces_enabled(uri: str) -> bool:
    """True when `uri` is a tracking server started with `--enable-workspaces`."""
    return is_server(uri) and bool(probe_server(uri).get("workspaces_enabled"))


def current_workspace() -> str | None:
    """The MLflow workspace requests go to (context or $MLFLOW_WORKSPACE), or None."""
    from mlflow.utils.workspace_context import get_request_workspace

    return get_request_workspace()


def client_workspace(client: MlflowClient, client_slug: str) -> Any:
    """A context in which requests go to `client_slug`'s workspace, on a server with workspaces;
    a no-op elsewhere. Each client of an agency is one workspace: that is the isolation."""
    if not workspaces_enabled(client.tracking_uri):
        return nullcontext()
    from mlflow.utils.workspace_context import WorkspaceContext

    if not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", client_slug) or len(client_slug) < 2:
        raise UserError(
            f"client {client_slug!r} cannot be an MLflow workspace: use 2-63 characters a-z, "
            "0-9 and inner '-'"
        )
    return WorkspaceContext(client_slug)


def _info_request(uri: str) -> urllib.request.Request:
    """GET server-info, with the basic-auth credentials MLflow's client would send."""
    request = urllib.request.Request(uri.rstrip("/") + "/api/3.0/mlflow/server-info")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if user:
        token = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
    return request


def _reason(error: Exception | None) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}"
    reason = getattr(error, "reason", None) or error
    return str(reason) or type(error).__name__


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path | None = None) -> str:
    """Id of the active experiment `name`; created (artifacts under `artifact_root`) if absent."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        created = _create_experiment(client, name, _artifact_location(client, name, artifact_root))
        if created is not None:
            return created
        exp = client.get_experiment_by_name(name)
    if exp.lifecycle_stage != "active":
        raise UserError(
            f"MLflow experiment {name!r} is deleted: restore it with `mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}` or set registry.experiment to another name"
        )
    return exp.experiment_id


def _create_experiment(client: MlflowClient, name: str, location: str | None) -> str | None:
    """The new experiment's id, or None when another process created it first."""
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return None


def _artifact_location(client: MlflowClient, name: str, artifact_root: Path | None) -> str | None:
    if artifact_root is None:
        db = sqlite_path(client.tracking_uri)
        if db is None:
            return None  # a tracking server places (and may proxy) artifacts itself
        artifact_root = db.parent / ARTIFACTS_DIR
    # Without an explicit location MLflow would write to ./mlruns under whatever the cwd is.
    folder = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-") or "experiment"
    return (Path(artifact_root).resolve() / folder).as_uri()


def registration_lock(client: MlflowClient, name: str, adapter_sha256: str) -> Any:
    """For a local store, an exclusive file lock per (model, adapter sha256), held while a
    registration looks for the adapter and files it: a second process registering the same
    bytes waits, then finds the first one's version. A no-op for a server (there, a version
    that finds a lower one of the same sha256 right after its creation removes itself)."""
    db = sqlite_path(client.tracking_uri)
    if db is None:
        return nullcontext()
    locks = db.parent / "locks"
    locks.mkdir(exist_ok=True)
    key = hashlib.sha256(f"{name}\0{adapter_sha256}".encode()).hexdigest()[:24]
    return _exclusive_lock(locks / f"register-{key}.lock")


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the block."""
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
