"""`ltx-lora run` end to end in a temporary workspace, on the tiny model, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
NETGUARD = Path(__file__).parent / "netguard"
CODE = ["curation", "ltx", "trainer", "evaluation", "registry"]


def make_workspace(ws: Path) -> None:
    """A git + DVC workspace like the repository: dvc.yaml, configs/ and the code it hashes."""
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, ws / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ["configs", *CODE]:
        shutil.copytree(REPO / name, ws / name, ignore=ignore)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for cmd in (
        ["git", "init", "-q"],
        [str(BIN / "dvc"), "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "workspace"],
    ):
        subprocess.run(cmd, cwd=ws, env=env, check=True, capture_output=True)


def ltx_lora(ws: Path, *args: str, log: Path) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, with connections off this machine refused and logged."""
    env = {**os.environ, "PYTHONPATH": str(NETGUARD), "NETGUARD_LOG": str(log)}
    return subprocess.run(
        [str(BIN / "ltx-lora"), "--workspace", str(ws), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, Path]:
    ws = tmp_path_factory.mktemp("ws")
    make_workspace(ws)
    log = ws.parent / f"{ws.name}-net.log"
    (ws / "configs" / "experiment" / "ci.yaml").write_text(
        "# @package _global_\ntrainer:\n  max_steps: 12\nevaluation:\n  seeds: [0]\n"
    )
    result = ltx_lora(ws, "run", "experiment=ci", log=log)
    assert result.returncode == 0, result.stderr[-3000:]
    return ws, result, log


def mlflow_client(ws: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{ws / '.mlflow' / 'mlflow.db'}")


def test_run_prints_what_it_made(first_run) -> None:
    ws, result, _ = first_run
    out = result.stdout
    assert "registered  demo.mascot version 1 (alias 'candidate')" in out
    assert "verdict     " in out and "fidelity_adapter" in out
    assert str(ws / "outputs" / "sample" / "eval" / "report.html") in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out


def test_nothing_tried_to_leave_the_machine(first_run) -> None:
    _, _, log = first_run
    assert not log.exists() or log.read_text() == ""


def test_registered_version_has_lineage_and_files(first_run) -> None:
    ws, _, _ = first_run
    client = mlflow_client(ws)
    version = client.get_model_version_by_alias("demo.mascot", "candidate")
    assert int(version.version) == 1
    train = json.loads((ws / "outputs/sample/train/train.json").read_text())
    for key in ("dataset_hash", "base_model_hash", "config_hash", "git_commit"):
        assert version.tags[key] == train["lineage"][key]
    assert len(version.tags["base_model_hash"]) == 64
    artifacts = {a.path.split("/")[-1] for a in client.list_artifacts(version.run_id, "adapter")}
    assert {"adapter.safetensors", "comfyui.safetensors"} <= artifacts


def test_stage_outputs_exist(first_run) -> None:
    ws, _, _ = first_run
    out = ws / "outputs" / "sample"
    manifest = (ws / "datasets/sample/captioned/manifest.jsonl").read_text().splitlines()
    quarantine = (ws / "datasets/sample/curated/quarantine.jsonl").read_text().splitlines()
    assert len(manifest) >= 6 and len(quarantine) >= 1
    assert all("zorblat" in json.loads(r)["caption"] for r in manifest)
    # one shard per clip, plus the empty prompt's (`_empty_prompt.safetensors`, caption dropout)
    shards = [p for p in (out / "cache").glob("*.safetensors") if not p.name.startswith("_")]
    assert len(shards) == len(manifest)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["verdict"] in {"pass", "fail"}
    assert -1.0 <= metrics["scores"]["fidelity_adapter"] <= 1.0  # a mean cosine
    losses = [json.loads(r)["loss"] for r in (out / "train/metrics.jsonl").read_text().splitlines()]
    assert all(loss > 0 for loss in losses)


def test_second_run_does_no_work_and_registers_nothing(first_run) -> None:
    ws, _, log = first_run
    records = sorted((ws / "outputs").rglob("stage.json")) + sorted(
        (ws / "datasets").rglob("stage.json")
    )
    before = {p: p.stat().st_mtime_ns for p in records}
    result = ltx_lora(ws, "run", "experiment=ci", log=log)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already registered" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in records} == before
    assert len(mlflow_client(ws).search_model_versions("name='demo.mascot'")) == 1


def test_dvc_repro_reproduces_the_run_without_redoing_it(first_run) -> None:
    """No lock yet: DVC runs every stage, each finds its work done; then all is up to date."""
    ws, _, log = first_run
    (ws / "configs" / "pipeline.yaml").write_text(
        (ws / "configs" / "pipeline.yaml").read_text().replace("experiment: null", "experiment: ci")
    )
    wrote = ltx_lora(ws, "params", log=log)  # dvc.yaml's stages run params.yaml
    assert wrote.returncode == 0, wrote.stderr[-2000:]
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PYTHONPATH": str(NETGUARD),
        "NETGUARD_LOG": str(log),
        "LTX_LORA_WORKSPACE": str(ws),
    }
    repro = subprocess.run(
        [str(BIN / "dvc"), "repro"], cwd=ws, env=env, capture_output=True, text=True, timeout=900
    )
    assert repro.returncode == 0, repro.stdout[-2000:] + repro.stderr[-2000:]
    assert repro.stdout.count("up to date, nothing to do") >= 4
    status = subprocess.run(
        [str(BIN / "dvc"), "status"], cwd=ws, env=env, capture_output=True, text=True, check=True
    )
    assert "up to date" in status.stdout.lower()
    assert len(mlflow_client(ws).search_model_versions("name='demo.mascot'")) == 1
    assert not log.exists() or log.read_text() == ""
