"""The team registry for real: `mlflow server` on a fresh PostgreSQL database on loopback, with
basic-auth and a workspace per client. One server for the module; stopped and dropped after."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.promote import promote
from registry.pull import pull
from registry.read import list_models
from registry.register import register_adapter
from registry.server import ServerSpec, add_client, start, stop
from registry.store import open_client
from stagekit.errors import UserError
from tests.unit.test_registry_register import CARD, make_eval_dir, make_train_dir

REPO = Path(__file__).resolve().parents[2]
PG = "postgresql://postgres@127.0.0.1:5432"
ADMIN = ("admin", "admin-" + secrets.token_hex(8))
USERS = {
    "acme": ("acme-bot", "pw-" + secrets.token_hex(8)),
    "bravo": ("bravo-bot", "pw-" + secrets.token_hex(8)),
}
pytestmark = pytest.mark.timeout(240)


def _postgres_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_user(who: str) -> None:
    """Send the next MLflow requests as `who` (admin or a client's user)."""
    user, password = ADMIN if who == "admin" else USERS[who]
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not _postgres_up():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    root = tmp_path_factory.mktemp("server")
    db = f"ltx_lora_test_{os.getpid()}_{secrets.token_hex(3)}"
    spec = ServerSpec(
        db_uri=f"{PG}/{db}",
        artifacts=root / "artifacts",
        state_dir=root,
        port=_free_port(),
        workers=1,  # one process to start on a busy machine; it serves requests concurrently
    )
    saved = {k: os.environ.get(k) for k in ("MLFLOW_AUTH_ADMIN_PASSWORD",)}
    os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"] = ADMIN[1]
    proc = start(spec)
    try:
        as_user("admin")
        for client, (user, password) in USERS.items():
            add_client(spec.url, client, user, password)
        yield {"url": spec.url, "root": root, "artifacts": root / "artifacts"}
    finally:
        stop(proc, timeout=1)  # no graceful drain needed; dropdb --force ends its sessions
        subprocess.run(
            ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", db],
            timeout=30,
            check=False,
        )
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.update({key: value})
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)


def register(url: str, name: str, root: Path, seed: int, score: float = 0.5) -> Any:
    scores = {"fidelity_adapter": score}
    return register_adapter(
        open_client(url),
        name=name,
        train_dir=make_train_dir(root / f"t{seed}", seed=seed),
        eval_dir=make_eval_dir(root / f"e{seed}", scores=scores),
        experiment="ltx-lora",
        dataset_card=CARD,
    )


def http_status(url: str, who: str, workspace: str) -> int:
    user, password = ADMIN if who == "admin" else USERS[who]
    request = urllib.request.Request(url)
    request.add_header(
        "Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode()
    )
    request.add_header("X-MLFLOW-WORKSPACE", workspace)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_each_client_sees_only_its_own_models_runs_and_artifacts(server, tmp_path):
    url = server["url"]
    as_user("acme")
    acme = register(url, "acme.mascot", tmp_path / "a", 1)
    promote(open_client(url, experiment=None), "acme.mascot", acme.version, actor="acme-lead")
    as_user("bravo")
    bravo = register(url, "bravo.logo", tmp_path / "b", 2)

    # bravo's user, looking at acme's model, run and stored adapter file: 403 each time
    api = f"{url}/api/2.0/mlflow"
    stored = next(server["artifacts"].rglob(f"{acme.run_id}/artifacts/adapter/comfyui*"))
    artifact = (
        f"{url}/api/2.0/mlflow-artifacts/artifacts/"
        + stored.relative_to(server["artifacts"]).as_posix()
    )
    for workspace in ("acme", "bravo"):
        assert (
            http_status(f"{api}/registered-models/get?name=acme.mascot", "bravo", workspace) == 403
        )
        assert http_status(f"{api}/runs/get?run_id={acme.run_id}", "bravo", workspace) == 403
        assert http_status(artifact, "bravo", workspace) == 403
    assert http_status(artifact, "acme", "acme") == 200
    assert http_status(f"{api}/runs/get?run_id={bravo.run_id}", "acme", "bravo") == 403

    client = open_client(url, experiment=None)
    assert [r["name"] for r in list_models(client)] == ["bravo.logo"]
    with pytest.raises(UserError, match=r"permission denied on acme\.mascot"):
        pull(client, "acme.mascot", "champion", "comfyui", tmp_path / "stolen")
    with pytest.raises(UserError, match="no client 'acme' visible to you"):
        list_models(client, "acme")
    assert not (tmp_path / "stolen").exists()

    as_user("admin")
    admin_view = {r["name"]: r["aliases"] for r in list_models(open_client(url, experiment=None))}
    assert admin_view == {
        "acme.mascot": {"candidate": 1, "champion": 1},
        "bravo.logo": {"candidate": 1},
    }


WORKER = textwrap.dedent(
    """
    import os, sys, time, traceback
    from pathlib import Path
    import mlflow  # imported once, then forked: eight processes without eight interpreter starts
    from registry.register import register_adapter
    from registry.store import open_client

    url, root, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    go = root / "go"
    children = []
    for seed in range(n):
        pid = os.fork()
        if pid == 0:  # a separate process: its own client, connections and retries
            code = 0
            try:
                while not go.exists():
                    time.sleep(0.002)
                reg = register_adapter(open_client(url), name="acme.crowd",
                                       train_dir=root / f"t{seed}", eval_dir=None,
                                       experiment="ltx-lora")
                # A file each: MLflow prints to stdout too, and forked writers interleave there.
                result = f"{reg.version} {reg.run_id} {reg.adapter_sha256}"
                (root / f"result{seed}").write_text(result)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stderr.flush()
            os._exit(code)
        children.append(pid)
    go.touch()  # all forked and waiting: they register at once
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    sys.exit(max(codes))
    """
)


def run_script(script: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """`python -c script args…` from the repository, telemetry off; asserts it succeeded."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true"}
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_eight_processes_registering_at_once_get_eight_distinct_versions(server, tmp_path):
    as_user("acme")
    for i in range(8):
        make_train_dir(tmp_path / f"t{i}", seed=100 + i)
    run_script(WORKER, server["url"], str(tmp_path), "8", timeout=180)

    rows = [(tmp_path / f"result{i}").read_text().split() for i in range(8)]
    assert sorted(int(r[0]) for r in rows) == list(range(1, 9))  # none lost, none twice
    client = open_client(server["url"], experiment=None)
    from mlflow.utils.workspace_context import WorkspaceContext

    with WorkspaceContext("acme"):
        versions = client.search_model_versions("name = 'acme.crowd'")
    assert len(versions) == 8
    assert {v.run_id for v in versions} == {r[1] for r in rows}
    assert len({v.tags["adapter_sha256"] for v in versions}) == 8


SKINNY_PULL = textwrap.dedent(
    """
    import sys
    # What mlflow-skinny lacks, and the heavy libraries: absent, as on an inference surface
    # (a None entry makes `import x` fail and importlib.util.find_spec(x) return None).
    for name in ("torch", "diffusers", "transformers", "peft", "accelerate", "sqlalchemy",
                 "alembic", "flask", "numpy", "pandas", "safetensors", "psycopg"):
        sys.modules[name] = None
    from pathlib import Path
    from registry.pull import pull
    from registry.store import open_client

    got = pull(open_client(sys.argv[1], experiment=None), "acme.skinny", "candidate",
               sys.argv[3], Path(sys.argv[2]))
    print(got.version, got.sha256)
    """
)


def test_pull_from_the_server_with_mlflow_skinny_only_then_refuse_a_tampered_file(server, tmp_path):
    as_user("acme")
    reg = register(server["url"], "acme.skinny", tmp_path, 7)
    dest = tmp_path / "loras"
    out = run_script(SKINNY_PULL, server["url"], str(dest), "comfyui", timeout=120)
    version, sha = out.stdout.strip().splitlines()[-1].split()
    pulled = dest / "acme.skinny.safetensors"
    assert version == "1" and pulled.is_file()
    record = json.loads((dest / "acme.skinny.pull.json").read_text())
    assert (record["sha256"], record["run_id"]) == (sha, reg.run_id)

    # Someone with disk access to the artifact store flips one byte of the stored adapter.
    stored = next(server["artifacts"].rglob(f"{reg.run_id}/artifacts/adapter/comfyui.safetensors"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    before = pulled.read_bytes()
    with pytest.raises(UserError, match="stored file was altered"):
        pull(open_client(server["url"], experiment=None), "acme.skinny", "1", "comfyui", dest)
    assert pulled.read_bytes() == before  # the good copy stays; no temp files are left
    assert sorted(p.name for p in dest.iterdir()) == ["acme.skinny.pull.json", pulled.name]


def test_a_server_that_is_down_is_a_clear_error_after_bounded_retries(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    start_time = time.monotonic()
    with pytest.raises(UserError, match=r"cannot reach the MLflow server .* \(3 tries"):
        register(url, "acme.mascot", tmp_path, 1)
    assert time.monotonic() - start_time < 15
