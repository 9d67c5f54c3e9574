"""The team registry: `mlflow server` on PostgreSQL, artifacts proxied, basic-auth, one MLflow
workspace per client with nobody let in by default.

`ltx-lora registry serve` runs it; `ltx-lora registry add-client` gives a client its workspace
and a user who can see nothing else. Needs the server-side packages (mlflow, Flask-WTF, psycopg).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from stagekit.errors import UserError

ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"
SECRET_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"
MIN_PASSWORD = 12  # MLflow's basic-auth refuses shorter passwords when it creates the user
_V2, _V3 = "/api/2.0/mlflow", "/api/3.0/mlflow"  # the auth app's REST routes
# Nobody sees anything they were not granted; the `default` workspace is closed too.
AUTH_INI = """\
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = {db_uri}
admin_username = {admin}
# basic auth plus one rule: a registered version's files are immutable (registry.server_guard)
authorization_function = registry.server_guard:authenticate
grant_default_workspace_access = false
# A password check is a PBKDF2 hash: without this cache every request pays one, and a busy
# registration makes dozens. A changed or revoked password takes effect within 60 s.
auth_cache_ttl_seconds = 60
"""


@dataclass(frozen=True)
class ServerSpec:
    """How to run one registry server. `state_dir` keeps its auth config and CSRF secret."""

    db_uri: str
    artifacts: Path
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    admin: str = "admin"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def server_argv(spec: ServerSpec) -> list[str]:
    """The `mlflow server` command line: PostgreSQL, proxied artifacts, basic-auth, workspaces."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        spec.db_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        Path(spec.artifacts).resolve().as_uri(),
        "--app-name",
        "basic-auth",
        "--enable-workspaces",
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "--workers",
        str(spec.workers),
    ]


def server_env(spec: ServerSpec) -> dict[str, str]:
    """The server's environment: auth config, a stable CSRF secret, telemetry off."""
    if not os.environ.get(ADMIN_PASSWORD_ENV):
        raise UserError(
            f"set {ADMIN_PASSWORD_ENV} to the admin password first: it creates user "
            f"{spec.admin!r} on first start (MLflow ships no default password)"
        )
    state = Path(spec.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    ini = state / "basic_auth.ini"
    ini.write_text(AUTH_INI.format(db_uri=spec.db_uri, admin=spec.admin), encoding="utf-8")
    return {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        SECRET_ENV: os.environ.get(SECRET_ENV) or _secret(state / "flask-secret"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def ensure_database(db_uri: str) -> bool:
    """Create the PostgreSQL database of `db_uri` if it is missing; True if this call made it."""
    import psycopg

    parts = urlsplit(db_uri.replace("postgresql+psycopg://", "postgresql://"))
    name = parts.path.lstrip("/")
    if parts.scheme != "postgresql" or not name:
        raise UserError(f"{db_uri!r} is not postgresql://user@host:port/database")
    admin_uri = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_uri, autocommit=True, connect_timeout=10) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if found:
            return False
        conn.execute(f'CREATE DATABASE "{name}"')  # names cannot be bound as parameters
    return True


def start(spec: ServerSpec, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the server in the background (its own process group); returns once it answers."""
    ensure_database(spec.db_uri)
    log = open(log_path or Path(spec.state_dir) / "server.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        server_argv(spec),
        env=server_env(spec),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:
        wait_ready(spec.url, proc)
    except BaseException:
        stop(proc)
        raise
    return proc


def serve(spec: ServerSpec) -> int:
    """Run the server in the foreground until it exits (Ctrl-C stops it)."""
    ensure_database(spec.db_uri)
    print(f"registry server on {spec.url} (database {_safe(spec.db_uri)})", file=sys.stderr)
    try:
        return subprocess.call(server_argv(spec), env=server_env(spec))
    except KeyboardInterrupt:
        return 130


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 90) -> None:
    """Poll `/health` until it answers OK (bounded); a RuntimeError if the server died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"mlflow server at {url} not ready after {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 5) -> None:
    """Stop a server started by `start` (its whole process group: uvicorn has workers)."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    except ProcessLookupError:
        pass


def check_password(password: str, source: str = "the password") -> None:
    """A UserError unless `password` passes MLflow's own rule (at least 12 characters): checked
    before anything is created, so a refused user leaves no workspace behind."""
    if len(password) < MIN_PASSWORD:
        raise UserError(
            f"{source} has {len(password)} characters: the registry server needs at least "
            f"{MIN_PASSWORD}; nothing was created"
        )


def add_client(uri: str, client: str, user: str, password: str) -> None:
    """Give `client` a workspace and `user` a role managing it (and nothing else). Run as the
    admin: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in the environment. Plain REST
    calls: importing MLflow's auth client would load the whole server app."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    check_password(password)
    try:
        MlflowClient(uri, uri).create_workspace(client, f"client {client}")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    _auth_call(
        uri, "POST", "/api/2.0/mlflow/users/create", {"username": user, "password": password}
    )
    role_name = f"{client}-members"
    roles = _auth_call(uri, "GET", "/api/3.0/mlflow/roles/list", params={"workspace": client})
    role = next((r for r in roles.get("roles", []) if r["name"] == role_name), None)
    if role is None:
        body = {"workspace": client, "name": role_name, "description": f"people of {client}"}
        role = _auth_call(uri, "POST", "/api/3.0/mlflow/roles/create", body)["role"]
        grant = {"resource_type": "workspace", "resource_pattern": "*", "permission": "MANAGE"}
        _auth_call(
            uri, "POST", "/api/3.0/mlflow/roles/permissions/add", {"role_id": role["id"]} | grant
        )
    _auth_call(
        uri, "POST", "/api/3.0/mlflow/roles/assign", {"username": user, "role_id": role["id"]}
    )


def _auth_call(
    uri: str, method: str, path: str, body: dict[str, Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    """One call to the auth API as the configured user; "already exists" is not an error."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    resp = http_request(get_default_host_creds(uri), path, method, json=body, **kwargs)
    if 200 <= resp.status_code < 300:
        return resp.json() if resp.content else {}
    text = resp.text
    if "RESOURCE_ALREADY_EXISTS" in text or "already" in text.lower():
        return {}
    raise UserError(f"registry server refused {path} ({resp.status_code}): {text[:300]}")


def _secret(path: Path) -> str:
    """A CSRF secret kept in `path` (0600) so restarts and workers agree on it."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def _safe(uri: str) -> str:
    """`uri` without a password, for printing."""
    parts = urlsplit(uri)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urlunsplit(parts)
