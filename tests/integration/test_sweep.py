"""`ltx-lora train -m`: real Hydra sweeps on the tiny model, with the basic launcher and with
submitit's local executor (the SLURM launcher's stand-in), grouped under one MLflow parent run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltx_lora.sweep import PARENT_TAG, first_member
from stagekit.errors import ConfigError
from stagekit.workspace import Workspace

BIN = Path(sys.executable).parent
STEPS = "trainer.max_steps=2"


@pytest.fixture(scope="module")
def ws(workspace: Workspace, cache_dir: Path, tmp_path_factory) -> Workspace:
    """A workspace of its own (its own MLflow store and outputs) over the session's dataset,
    model and cache, which the sweep only reads."""
    own = Workspace(tmp_path_factory.mktemp("sweepws"))
    (own.root / "datasets").symlink_to(workspace.root / "datasets")
    (own.root / ".models").symlink_to(workspace.models)
    own.outputs("sample").mkdir(parents=True)
    own.cache("sample").symlink_to(cache_dir)
    return own


def sweep(ws: Workspace, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run a sweep as a user would; returns the result and the sweep's folder (the newest)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LTX_LORA_"))}
    done = subprocess.run(
        [
            str(BIN / "ltx-lora"),
            "--workspace",
            str(ws.root),
            "train",
            "-m",
            "model=tiny",
            *overrides,
        ],
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    newest = max((ws.outputs("sample") / "sweeps").iterdir(), key=lambda p: p.stat().st_mtime)
    return done, newest


def runs_under(ws: Workspace, sweep_dir: Path) -> tuple[object, list[object]]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{ws.mlflow_dir / 'mlflow.db'}")
    parent_id = json.loads((sweep_dir / "sweep.json").read_text())["parent_run"]
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'"
    )
    return parent, children


def member_params(sweep_dir: Path, n: int) -> dict:
    return json.loads((sweep_dir / str(n) / "train" / "train.json").read_text())["params"]


def test_local_sweep_trains_every_combination_in_its_own_folder(ws: Workspace) -> None:
    done, sweep_dir = sweep(ws, "lora.rank=4,8", "trainer.lr=1e-4,2e-4", STEPS)
    grid = {
        (member_params(sweep_dir, n)["rank"], member_params(sweep_dir, n)["lr"]) for n in range(4)
    }
    assert grid == {(4, 1e-4), (4, 2e-4), (8, 1e-4), (8, 2e-4)}
    for n in range(4):
        assert (sweep_dir / str(n) / "train" / "adapter" / "adapter.safetensors").is_file()
        assert (sweep_dir / str(n) / ".hydra" / "overrides.yaml").is_file()
    assert not ws.train("sample").exists()  # the pipeline's own train/ is untouched
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert [m["num"] for m in record["members"]] == [0, 1, 2, 3]
    assert "sweep of 4 in" in done.stdout and "MLflow parent run" in done.stdout

    parent, children = runs_under(ws, sweep_dir)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["ltx_lora.sweep"] == sweep_dir.name
    assert len(children) == 4
    ranks_lrs = {
        (int(c.data.params["lora.rank"]), float(c.data.params["trainer.lr"])) for c in children
    }
    assert ranks_lrs == grid


def test_submitit_local_launcher_runs_members_as_jobs(ws: Workspace) -> None:
    """The code path of `hydra/launcher=submitit_slurm`: the task pickled, run in a submitit
    job, its result shipped back; only the executor differs."""
    _, sweep_dir = sweep(ws, "hydra/launcher=local", "lora.rank=4,8", STEPS)
    assert {member_params(sweep_dir, n)["rank"] for n in (0, 1)} == {4, 8}
    jobs = list((sweep_dir / ".submitit").glob("*/*_result.pkl"))
    assert len(jobs) == 2  # two submitit jobs, each returned a result
    _, children = runs_under(ws, sweep_dir)
    assert len(children) == 2


def test_a_misspelt_key_fails_before_anything_launches(ws: Workspace) -> None:
    done = subprocess.run(
        [str(BIN / "ltx-lora"), "--workspace", str(ws.root), "train", "-m", "lora.rnak=4,8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "lora.rnak" in done.stderr and "Traceback" not in done.stderr


def test_slurm_launcher_off_a_cluster_says_what_to_do(ws: Workspace, tmp_path: Path) -> None:
    """A machine without SLURM's client: PATH holds no srun (`make test` installs one, so the
    test gives the CLI a PATH without it)."""
    args = ["train", "-m", "hydra/launcher=slurm", "lora.rank=4,8"]
    done = subprocess.run(
        [str(BIN / "ltx-lora"), "--workspace", str(ws.root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": str(tmp_path)},
    )
    assert done.returncode == 1
    assert "srun is not on this machine's PATH" in done.stderr and "Traceback" not in done.stderr


def test_first_member_takes_each_sweep_at_its_first_value() -> None:
    got = first_member(
        ["lora.rank=8,16", "trainer.lr=range(1,3)", "hydra/launcher=local", "x=[1,2]"]
    )
    assert got == ["lora.rank=8", "trainer.lr=1", "x=[1,2]"]
    with pytest.raises(ConfigError, match="bad sweep override"):
        first_member(["lora.rank=8,"])


def test_launcher_configs_compose_onto_the_submitit_plugin() -> None:
    from hydra import compose, initialize_config_dir

    from ltx_lora.config import PACKAGED_CONFIGS

    expected = {
        "slurm": ("SlurmLauncher", 1, 1, 1),
        "slurm_multinode": ("SlurmLauncher", 2, 8, 8),
        "local": ("LocalLauncher", 1, 1, 0),
    }
    for name, (target, nodes, tasks, gpus) in expected.items():
        with initialize_config_dir(config_dir=str(PACKAGED_CONFIGS), version_base="1.3"):
            cfg = compose("train", [f"hydra/launcher={name}"], return_hydra_config=True)
        launcher = cfg.hydra.launcher
        assert launcher._target_.endswith(target)
        assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (
            nodes,
            tasks,
            gpus,
        )
