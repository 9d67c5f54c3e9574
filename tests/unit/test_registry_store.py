"""Registry config and store: URIs, the YAML configs, experiments, concurrent schema creation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from pydantic import ValidationError

from registry.config import RegistryConfig
from registry.store import local_tracking_uri, open_client, sqlite_path
from stagekit.errors import UserError
from tests.unit.test_registry_register import shared_template_db

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "registry"


def test_local_tracking_uri_is_absolute_sqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = local_tracking_uri(Path(".mlflow"))
    assert uri == f"sqlite:///{tmp_path.resolve()}/.mlflow/mlflow.db"
    assert sqlite_path(uri) == tmp_path.resolve() / ".mlflow" / "mlflow.db"
    assert sqlite_path("http://127.0.0.1:5000") is None


def test_config_defaults_and_rejections():
    cfg = RegistryConfig()
    assert (cfg.backend, cfg.tracking_uri, cfg.experiment, cfg.alias) == (
        "local",
        None,
        "ltx-lora",
        "candidate",
    )
    bad = [
        {"backend": "local", "tracking_uri": "http://mlflow:5000"},
        {"backend": "server"},
        {"backend": "s3"},
        {"alias": "latest"},
        {"alias": "v3"},
        {"alias": "Has Space"},
        {"tracking_uri": None, "experimnet": "typo"},
    ]
    for kwargs in bad:
        with pytest.raises(ValidationError):
            RegistryConfig(**kwargs)


@pytest.mark.parametrize("name", ["local", "server"])
def test_yaml_configs_name_their_command_and_validate(name, monkeypatch):
    path = CONFIGS / f"{name}.yaml"
    assert path.read_text().startswith(f"# ltx-lora register registry={name}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = RegistryConfig(**OmegaConf.to_container(OmegaConf.load(path), resolve=True))
    assert cfg.backend == name
    if name == "server":
        assert cfg.tracking_uri == "http://127.0.0.1:5000"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.team.internal")
        cfg = RegistryConfig(**OmegaConf.to_container(OmegaConf.load(path), resolve=True))
        assert cfg.tracking_uri == "https://mlflow.team.internal"


def test_open_client_makes_the_experiment_once_under_the_artifact_root(tmp_path, tmp_path_factory):
    (tmp_path / ".mlflow").mkdir()  # the session's fresh schema: making one costs seconds
    shutil.copy(shared_template_db(tmp_path_factory), tmp_path / ".mlflow" / "mlflow.db")
    uri = local_tracking_uri(tmp_path / ".mlflow")
    client = open_client(uri, tmp_path / ".mlflow" / "artifacts", experiment="brand x/runs")
    again = open_client(uri, tmp_path / "elsewhere", experiment="brand x/runs")

    exp = again.get_experiment_by_name("brand x/runs")
    assert exp.artifact_location == (tmp_path / ".mlflow" / "artifacts" / "brand-x-runs").as_uri()
    assert len([e for e in client.search_experiments() if e.name == "brand x/runs"]) == 1
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"

    client.delete_experiment(exp.experiment_id)
    with pytest.raises(UserError, match="is deleted: restore it"):
        open_client(uri, None, experiment="brand x/runs")


WORKER = textwrap.dedent(
    """
    import os, sys, time, traceback
    from pathlib import Path
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    import mlflow  # imported once, then forked: the processes reach the database together
    from registry.store import open_client

    uri, root, out, n = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    go, children = out / "go", []
    for i in range(n):
        pid = os.fork()
        if pid == 0:  # its own process: own engine, own connections, own schema check
            code = 0
            try:
                while not go.exists():
                    time.sleep(0.002)
                client = open_client(uri, root)
                exp = client.get_experiment_by_name("ltx-lora")
                (out / f"run{i}").write_text(client.create_run(exp.experiment_id).info.run_id)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stderr.flush()
            os._exit(code)
        children.append(pid)
    go.touch()
    sys.exit(max(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in children))
    """
)


def test_four_processes_on_a_fresh_database_all_succeed(tmp_path):
    mlflow_dir = tmp_path / ".mlflow"
    uri = local_tracking_uri(mlflow_dir)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    args = [uri, str(mlflow_dir / "artifacts"), str(tmp_path), "4"]
    out = subprocess.run(
        [sys.executable, "-c", WORKER, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]

    run_ids = {(tmp_path / f"run{i}").read_text() for i in range(4)}
    client = open_client(uri, mlflow_dir / "artifacts")
    exp = client.get_experiment_by_name("ltx-lora")
    assert {r.info.run_id for r in client.search_runs([exp.experiment_id])} == run_ids
    assert len(run_ids) == 4
