"""DVC experiments over the Hydra configs, in a temporary git + DVC workspace on the tiny model.

`dvc repro` runs the committed params.yaml; `dvc exp run -S lora.rank=4` composes configs/ into
params.yaml and reruns only the stages that read `lora`; `dvc exp show` lists both side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_pipeline import BIN, NETGUARD, make_workspace

pytestmark = pytest.mark.slow

# as cheap as the pipeline gets: 4 steps; one seed, 2 denoising steps, 9 frames per render
CI = """# @package _global_
trainer:
  max_steps: 4
evaluation:
  seeds: [0]
  steps: 2
  frames: 9
  stats:
    resamples: 200
"""
HYDRA = "[hydra]\n    enabled = true\n    config_dir = configs\n    config_name = pipeline\n"


def sh(ws: Path, *cmd: str, log: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PYTHONPATH": str(NETGUARD),
        "NETGUARD_LOG": str(log),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    done = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2500:]}\n{done.stderr[-2500:]}"
    return done


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> tuple[Path, Path, str, str]:
    """(workspace, net log, `dvc repro` output, `dvc exp run -S lora.rank=4` output)."""
    ws = tmp_path_factory.mktemp("dvcexp")
    make_workspace(ws)
    log = ws.parent / f"{ws.name}-net.log"
    (ws / "configs/experiment/ci.yaml").write_text(CI)
    pipeline = ws / "configs/pipeline.yaml"
    pipeline.write_text(pipeline.read_text().replace("experiment: null", "experiment: ci"))
    with (ws / ".dvc/config").open("a") as f:
        f.write(HYDRA)
    sh(ws, str(BIN / "ltx-lora"), "sample", log=log)  # dvc checks deps before any stage runs
    sh(ws, str(BIN / "ltx-lora"), "params", log=log)
    sh(ws, "git", "add", "-A", log=log)
    sh(ws, "git", "commit", "-qm", "ci pipeline", log=log)
    repro = sh(ws, str(BIN / "dvc"), "repro", log=log).stdout
    sh(ws, "git", "add", "dvc.lock", "outputs/sample/metrics.json", log=log)
    sh(ws, "git", "commit", "-qm", "baseline", log=log)
    exp = sh(ws, str(BIN / "dvc"), "exp", "run", "-n", "rank4", "-S", "lora.rank=4", log=log)
    return ws, log, repro, exp.stdout


def test_repro_runs_every_stage_from_params_yaml(experiment) -> None:
    ws, _, repro, _ = experiment
    for stage in ("curate", "caption", "preprocess", "train", "evaluate", "register"):
        assert f"Running stage '{stage}'" in repro
    assert "ltx-lora train --params params.yaml" in repro
    train = json.loads((ws / "outputs/sample/train/train.json").read_text())
    assert train["params"]["max_steps"] == 4  # experiment=ci reached the stage via params.yaml


def test_exp_run_composes_configs_and_reruns_only_what_reads_lora(experiment) -> None:
    ws, _, _, out = experiment
    for stage in ("curate", "caption", "preprocess"):
        assert f"Stage '{stage}' didn't change, skipping" in out
    for stage in ("train", "evaluate"):
        assert f"Running stage '{stage}'" in out
    params = yaml.safe_load((ws / "params.yaml").read_text())
    assert params["lora"]["rank"] == 4 and params["trainer"]["max_steps"] == 4
    train = json.loads((ws / "outputs/sample/train/train.json").read_text())
    assert train["params"]["rank"] == 4


def test_exp_show_lists_params_and_metrics_side_by_side(experiment) -> None:
    ws, log, _, _ = experiment
    shown = json.loads(sh(ws, str(BIN / "dvc"), "exp", "show", "--json", log=log).stdout)
    base = next(c["data"] for c in shown if c["rev"] != "workspace")  # the baseline commit
    exps = [e for c in shown for r in c.get("experiments") or [] for e in r["revs"]]
    rank4 = next((e["data"] for e in exps if e.get("name") == "rank4"), None)
    assert rank4 is not None, json.dumps(shown)[:3000]
    key = "outputs/sample/metrics.json"
    assert base["params"]["params.yaml"]["data"]["lora"]["rank"] == 8
    assert rank4["params"]["params.yaml"]["data"]["lora"]["rank"] == 4
    assert base["metrics"][key]["data"]["verdict"] in {"pass", "fail"}
    metrics = rank4["metrics"][key]["data"]
    assert metrics["verdict"] in {"pass", "fail"}
    assert metrics["train_loss"] > 0 and metrics["train_val_loss"] > 0
    assert any(k.endswith("_adapter") for k in metrics)  # the evaluation's scores
    assert not log.exists() or log.read_text() == ""
