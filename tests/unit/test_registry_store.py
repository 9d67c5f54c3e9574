"""Registry config and store: URIs, the YAML configs, experiments, concurrent schema creation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from pydantic import ValidationError

from registry.config import RegistryConfig
from registry.store import local_tracking_uri, open_client, sqlite_path
from stagekit.errors import UserError

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


def test_open_client_makes_the_experiment_once_under_the_artifact_root(tmp_path):
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
    import os, sys, time
    from pathlib import Path
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    import mlflow  # paid before the barrier, so the processes reach the database together
    from registry.store import open_client

    ready, go, uri, root = sys.argv[1:]
    Path(ready).touch()
    while not os.path.exists(go):
        time.sleep(0.005)
    client = open_client(uri, Path(root))
    exp = client.get_experiment_by_name("ltx-lora")
    print(client.create_run(exp.experiment_id).info.run_id)
    """
)


def test_four_processes_on_a_fresh_database_all_succeed(tmp_path):
    mlflow_dir = tmp_path / ".mlflow"
    uri = local_tracking_uri(mlflow_dir)
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(4)]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    args = [str(go), uri, str(mlflow_dir / "artifacts")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(r), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r in ready
    ]
    deadline = time.monotonic() + 45
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.02)
    go.touch()
    outputs = [p.communicate(timeout=50) for p in procs]

    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
    run_ids = {out.strip() for out, _ in outputs}
    client = open_client(uri, mlflow_dir / "artifacts")
    exp = client.get_experiment_by_name("ltx-lora")
    assert {r.info.run_id for r in client.search_runs([exp.experiment_id])} == run_ids
    assert len(run_ids) == 4
