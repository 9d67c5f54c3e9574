"""configs/accelerate/sbatch_*.sh submitted with `sbatch` to a real slurmctld: 2 processes on the
one node train the adapter a plain 2-process `torchrun` trains, also when SLURM requeues the
job mid-run (--requeue) or a cancelled job is submitted again: each resumes from a checkpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stagekit.workspace import Workspace
from tests.integration.slurm_cluster import SlurmCluster, free_port

REPO = Path(__file__).parents[3]
SCRIPTS = REPO / "configs" / "accelerate"
BIN = Path(sys.executable).parent
STEPS = 24
TRAIN = (
    "model=tiny",
    f"trainer.max_steps={STEPS}",
    "trainer.log_every=1",
    "trainer.warmup_steps=2",
    "trainer.checkpoint_every=4",
    "trainer.trackers=[]",  # MLflow is the sweep test's business; here it costs ~25 % of a run
)
# the scripts' #SBATCH lines ask for 2 nodes x 8 GPUs; command-line options override them
TORCHRUN_ON_THIS_NODE = ("--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=2")
SRUN_ON_THIS_NODE = ("--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1")


def job_env(slurm: SlurmCluster) -> dict[str, str]:
    """What a user's login shell would hand sbatch (it exports it to the job)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LTX_LORA_"))}
    return {
        **env,
        "SLURM_CONF": str(slurm.conf),
        "PATH": f"{BIN}{os.pathsep}{env['PATH']}",
        "OMP_NUM_THREADS": "1",
        "NPROC_PER_NODE": "2",  # no GPUs here to count
        "MASTER_PORT": str(free_port()),
    }


def submit(slurm: SlurmCluster, ws: Workspace, script: str, opts, *, wait: bool) -> str:
    """`sbatch` from the workspace, as the scripts' headers say; returns the job id."""
    args = [
        "sbatch",
        "--parsable",
        "--gpus-per-node=0",
        "--time=10",
        f"--output={ws.root}/slurm-%j.out",
        *(["--wait"] if wait else []),
        *opts,
        str(SCRIPTS / script),
        *TRAIN,
    ]
    done = subprocess.run(
        args, cwd=ws.root, env=job_env(slurm), capture_output=True, text=True, timeout=600
    )
    job = done.stdout.strip().split(";")[0]
    if wait:
        assert done.returncode == 0, job_log(ws, job) + done.stderr + slurm.logs()
    else:
        assert done.returncode == 0 and job.isdigit(), done.stderr
    return job


def job_log(ws: Workspace, job: str, tail: int = 4000) -> str:
    path = ws.root / f"slurm-{job}.out"
    return path.read_text(errors="replace")[-tail:] if path.is_file() else f"(no {path.name})"


def adapter(ws: Workspace) -> dict[str, torch.Tensor]:
    return load_file(ws.train("sample") / "adapter" / "adapter.safetensors")


def losses(ws: Workspace) -> list[tuple[int, float]]:
    rows = (ws.train("sample") / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, rows)]


def assert_same_training(ws: Workspace, reference: Workspace) -> None:
    assert losses(ws) == losses(reference)
    mine, theirs = adapter(ws), adapter(reference)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)  # bit for bit
    final = json.loads((ws.train("sample") / "train.json").read_text())["final"]
    assert final["processes"] == 2 and final["rank_weight_max_diff"] == 0.0


def saved_steps(checkpoints: Path) -> list[int]:
    """Steps of the complete checkpoints on disk (a write in flight is a hidden temp folder)."""
    return [int(p.parent.name.split("-")[1]) for p in checkpoints.glob("*/step-*/state.json")]


def wait_for_checkpoint(slurm: SlurmCluster, ws: Workspace, job: str, step: int) -> None:
    ckpts = ws.outputs("sample") / "checkpoints"
    deadline = time.time() + 300
    while max(saved_steps(ckpts), default=0) < step:
        assert slurm.state(job) in ("PENDING", "RUNNING"), job_log(ws, job) + slurm.logs()
        assert time.time() < deadline, f"no step-{step} checkpoint in 300 s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(new_ws) -> Workspace:
    """The same training as a plain 2-process torchrun on this machine, no SLURM."""
    ref = new_ws("torchrun")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LTX_LORA_"))}
    done = subprocess.run(
        [
            str(BIN / "torchrun"),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            "-m",
            "ltx_lora.cli",
            "train",
            *TRAIN,
        ],
        cwd=ref.root,
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(losses(ref)) == STEPS
    return ref


def test_requeued_sbatch_torchrun_job_trains_the_torchrun_adapter(
    slurm: SlurmCluster, reference: Workspace, new_ws
) -> None:
    """sbatch_torchrun.sh submitted with --requeue and requeued by SLURM after its step-8
    checkpoint (`scontrol requeue`, what preemption does): the same job id runs the script
    again, resumes, and ends with the plain torchrun run's losses and adapter."""
    ws = new_ws("sbatch_torchrun")
    opts = (*TORCHRUN_ON_THIS_NODE, "--requeue", "--open-mode=append")
    job = submit(slurm, ws, "sbatch_torchrun.sh", opts, wait=False)
    wait_for_checkpoint(slurm, ws, job, step=8)
    slurm.run("scontrol", "requeue", job)
    # requeued once its first run has ended, the job waits ~2 minutes (its begin time) before
    # it may start again; an admin can say now
    deadline = time.time() + 60
    while slurm.state(job) != "PENDING":
        assert time.time() < deadline, slurm.logs()
        time.sleep(0.1)
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    slurm.wait_empty(timeout=600)
    ctld = slurm.ctld_log()
    assert re.search(rf"Requeuing JobId={job}\b", ctld), ctld[-3000:]
    assert re.search(rf"_job_complete: JobId={job} WEXITSTATUS 0", ctld), job_log(ws, job)
    log = job_log(ws, job, tail=0)
    resumed = re.search(r"train: resuming from step (\d+) \(", log)
    assert resumed and 8 <= int(resumed.group(1)) < STEPS, log[-3000:]
    assert_same_training(ws, reference)


def test_cancelled_srun_job_resumes_from_its_last_checkpoint(
    slurm: SlurmCluster, reference: Workspace, new_ws
) -> None:
    """sbatch_srun.sh (2 SLURM tasks, no torchrun) cancelled with scancel after its step-8
    checkpoint, then submitted again: it resumes from the newest checkpoint on disk and ends
    with the uninterrupted torchrun run's losses and adapter."""
    ws = new_ws("sbatch_srun")
    job = submit(slurm, ws, "sbatch_srun.sh", SRUN_ON_THIS_NODE, wait=False)
    ckpts = ws.outputs("sample") / "checkpoints"
    wait_for_checkpoint(slurm, ws, job, step=8)
    slurm.run("scancel", job)
    slurm.wait_empty(timeout=60)
    assert not ws.train("sample").exists(), "the job finished before scancel reached it"
    assert re.search(rf"_slurm_rpc_kill_job: REQUEST_KILL_JOB JobId={job}\b", slurm.ctld_log())
    last = max(saved_steps(ckpts))
    assert 8 <= last < STEPS

    again = submit(slurm, ws, "sbatch_srun.sh", SRUN_ON_THIS_NODE, wait=True)
    assert f"train: resuming from step {last} (" in job_log(ws, again, tail=0)
    assert_same_training(ws, reference)
    slurm.wait_empty(timeout=30)
