"""The team server under faults, for real (`mlflow server`, PostgreSQL, basic auth, a workspace
per client): a registered version's files cannot be overwritten by a client's user, refusals
reach the CLI as one line, a short password creates nothing, and eight processes registering
the same adapter make one version."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
from requests.exceptions import HTTPError

from registry.promote import promote
from registry.pull import pull
from registry.store import client_workspace, open_client
from stagekit.errors import UserError
from stagekit.hashing import sha256_file
from tests.integration.test_registry_faults import release_together
from tests.integration.test_registry_server import (  # noqa: F401
    ADMIN,
    USERS,
    as_user,
    register,
    server,
)
from tests.unit.test_registry_register import make_train_dir

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / ".venv" / "bin" / "ltx-lora"
pytestmark = pytest.mark.timeout(400)


def request(
    url: str, who: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None
) -> int:
    """The HTTP status of one request as `who` (admin, acme, bravo)."""
    user, password = ADMIN if who == "admin" else USERS[who]
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    req.add_header("Authorization", "Basic " + b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def stored_file(artifacts: Path, run_id: str, name: str) -> Path:
    return next(artifacts.rglob(f"{run_id}/artifacts/adapter/{name}"))


def test_a_registered_versions_files_are_written_by_nobody_but_an_admin(
    server,  # noqa: F811
    tmp_path,
):
    url = server["url"]
    as_user("acme")
    reg = register(url, "acme.mascot", tmp_path / "a", 1)
    client = open_client(url, experiment=None)
    promote(client, "acme.mascot", reg.version, actor="acme-lead")
    stored = stored_file(server["artifacts"], reg.run_id, "comfyui.safetensors")
    before = sha256_file(stored)
    forged = make_train_dir(tmp_path / "forger", seed=9) / "adapter" / "comfyui.safetensors"

    # acme's own user, through MLflow's client and through plain HTTP: 403, nothing changed
    with client_workspace(client, "acme"), pytest.raises(HTTPError) as refused:
        client.log_artifact(reg.run_id, str(forged), "adapter")
    assert refused.value.response.status_code == 403 and "immutable" in str(refused.value)
    rel = stored.relative_to(server["artifacts"]).as_posix()
    artifact = f"{url}/api/2.0/mlflow-artifacts/artifacts/{rel}"
    assert request(artifact, "acme", "PUT", forged.read_bytes()) == 403
    assert request(artifact, "acme", "DELETE") == 403
    assert sha256_file(stored) == before
    got = pull(client, "acme.mascot", "champion", "comfyui", tmp_path / "loras")
    assert got.sha256 == before == sha256_file(got.path)

    # The rule is narrow: a run no version points at is still the user's to write.
    with client_workspace(client, "acme"):
        experiment = client.get_experiment_by_name("ltx-lora").experiment_id
        scratch = client.create_run(experiment).info.run_id
        client.log_artifact(scratch, str(forged), "adapter")

    # An admin may (a repair); a pull then refuses the bytes the version does not record.
    as_user("admin")
    with client_workspace(client, "acme"):
        open_client(url, experiment=None).log_artifact(reg.run_id, str(forged), "adapter")
    assert sha256_file(stored) == sha256_file(forged)
    as_user("acme")
    with pytest.raises(UserError, match=before):
        pull(client, "acme.mascot", "champion", "comfyui", tmp_path / "again")


def test_a_registered_versions_record_tags_are_changed_by_nobody_but_an_admin(
    server,  # noqa: F811
    tmp_path,
):
    """The `file.<name>` hashes pulls check against, the lineage and the verdict are the
    version's record: acme's own user may not set or delete them (through MLflow's client or
    plain HTTP), may still write the tags the registry records later, and an admin may repair
    them."""
    from mlflow.exceptions import MlflowException

    url = server["url"]
    as_user("acme")
    reg = register(url, "acme.bolt", tmp_path / "a", 1)
    client = open_client(url, experiment=None)
    key = "file.comfyui.safetensors"
    with client_workspace(client, "acme"):
        before = dict(client.get_model_version("acme.bolt", str(reg.version)).tags)
        assert key in before and before["dataset_hash"]
        for tag in (key, "dataset_hash", "verdict", "score.fidelity_lift"):
            with pytest.raises(MlflowException, match="immutable") as refused:
                client.set_model_version_tag("acme.bolt", str(reg.version), tag, "forged")
            assert refused.value.get_http_status_code() == 403
        with pytest.raises(MlflowException, match="immutable"):
            client.delete_model_version_tag("acme.bolt", str(reg.version), key)
        client.set_model_version_tag("acme.bolt", str(reg.version), "note", "reviewed")
        after = dict(client.get_model_version("acme.bolt", str(reg.version)).tags)
    assert after == before | {"note": "reviewed"}
    body = json.dumps({"name": "acme.bolt", "version": str(reg.version), "key": key, "value": "x"})
    headers = {"Content-Type": "application/json", "X-MLflow-Workspace": "acme"}
    setter = f"{url}/api/2.0/mlflow/model-versions/set-tag"
    assert request(setter, "acme", "POST", body.encode(), headers) == 403
    got = pull(client, "acme.bolt", str(reg.version), "comfyui", tmp_path / "loras")
    assert got.sha256 == before[key].split(":")[0]

    as_user("admin")  # a repair: an admin may
    admin = open_client(url, experiment=None)
    with client_workspace(admin, "acme"):
        admin.set_model_version_tag("acme.bolt", str(reg.version), "verdict", "fail")
        assert admin.get_model_version("acme.bolt", str(reg.version)).tags["verdict"] == "fail"
    as_user("acme")


def cli(*args: str, who: str, url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`ltx-lora ARGS` against the server as `who`, as a user would run it."""
    user, password = ADMIN if who == "admin" else USERS[who]
    env = os.environ | {
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": password,
        "OMP_NUM_THREADS": "1",
        **env,
    }
    argv = [str(CLI), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed (asserted: non-zero exit, nothing else)."""
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_refusals_reach_the_cli_as_one_line_naming_user_and_action(
    server,  # noqa: F811
    tmp_path,
):
    url, bravo = server["url"], USERS["bravo"][0]
    srv = ("--registry", "server")
    refused = {
        "registry history": cli("registry", "history", "acme.mascot", *srv, who="bravo", url=url),
        "registry rollback": cli("registry", "rollback", "acme.mascot", *srv, who="bravo", url=url),
        "registry promote": cli(
            "registry", "promote", "acme.mascot", "1", *srv, who="bravo", url=url
        ),
        "pull": cli(
            "pull", "acme.mascot@champion", "--for", "comfyui", "--to", str(tmp_path), *srv,
            who="bravo", url=url,
        ),
        "registry add-client": cli(
            "registry", "add-client", "carol", "--user", "carol-bot", *srv, who="bravo", url=url,
            LTX_LORA_CLIENT_PASSWORD="long-enough-password",
        ),
    }  # fmt: skip
    for action, done in refused.items():
        line = one_line(done)
        assert line.startswith(f"ltx-lora {action}: error: ") and bravo in line, line
        assert "403" in line or "permission denied" in line, line
        assert "Traceback" not in done.stderr

    # registering into another client's workspace through the API: one line too
    as_user("bravo")
    with pytest.raises(UserError) as denied:
        register(url, "acme.sneaky", tmp_path / "s", 5)
    assert "register acme.sneaky" in str(denied.value) and repr(bravo) in str(denied.value)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    line = one_line(
        cli("registry", "history", "acme.mascot", "--tracking-uri", down, who="acme", url=down)
    )
    assert down in line


def test_a_short_password_creates_no_workspace_and_no_user(server):  # noqa: F811
    url = server["url"]
    done = cli(
        "registry", "add-client", "carol", "--user", "carol-bot", "--registry", "server",
        who="admin", url=url, LTX_LORA_CLIENT_PASSWORD="short-pw",
    )  # fmt: skip
    assert "at least 12" in one_line(done)
    as_user("admin")
    workspaces = [w.name for w in open_client(url, experiment=None).list_workspaces()]
    assert "carol" not in workspaces and "acme" in workspaces
    user = f"{url}/api/2.0/mlflow/users/get?username=carol-bot"
    assert request(user, "admin") == 404
    assert request(f"{url}/api/2.0/mlflow/users/get?username=acme-bot", "admin") == 200


def test_eight_processes_registering_the_same_adapter_make_one_version(
    server,  # noqa: F811
    tmp_path,
):
    url, go = server["url"], tmp_path / "go"
    train = make_train_dir(tmp_path / "t", seed=11)
    user, password = USERS["acme"]
    code = f"""
        import json, os, time
        from pathlib import Path
        from registry.register import register_adapter
        from registry.store import open_client
        from tests.unit.test_registry_register import CARD
        client = open_client({url!r}, experiment=None)
        Path({str(go)!r} + f".ready.{{os.getpid()}}").touch()  # imported and connected
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        r = register_adapter(client, name="acme.race", train_dir=Path({str(train)!r}),
                             eval_dir=None, experiment="ltx-lora", dataset_card=CARD)
        print(json.dumps([r.version, r.created]))
    """
    env = os.environ | {
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": password,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    release_together(go, procs)
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    as_user("acme")
    client = open_client(url, experiment=None)
    with client_workspace(client, "acme"):
        versions = client.search_model_versions("name = 'acme.race'")
    assert len(versions) == 1
    assert {v for v, _ in results} == {int(versions[0].version)}
    assert sorted(c for _, c in results) == [False] * 7 + [True]
