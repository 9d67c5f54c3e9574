"""`ltx-lora train -m hydra/launcher=slurm`: a sweep submitted by submitit's SLURM executor to a
real slurmctld, its members run by slurmd, grouped under one MLflow parent run."""

from __future__ import annotations

import re

from stagekit.workspace import Workspace
from tests.integration.slurm_cluster import SlurmCluster
from tests.integration.test_sweep import member_params, runs_under, sweep

# configs/hydra/launcher/slurm.yaml asks for a GPU node (1 GPU, 8 CPUs, 64 GB); the test node
# has 2 CPUs and no GPU, so each member asks for what it has, as a CPU partition's user would
ON_THIS_NODE = (
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.setup=['export OMP_NUM_THREADS=1']",
)


def test_slurm_sweep_runs_each_member_as_a_slurm_job(ws: Workspace, slurm: SlurmCluster) -> None:
    _, sweep_dir = sweep(
        ws, "hydra/launcher=slurm", *ON_THIS_NODE, "lora.rank=2,4", "trainer.max_steps=2"
    )
    assert {member_params(sweep_dir, n)["rank"] for n in (0, 1)} == {2, 4}
    for n in (0, 1):
        assert (sweep_dir / str(n) / "train" / "adapter" / "adapter.safetensors").is_file()

    # one job array of two tasks: scheduled by slurmctld, run by slurmd (submitit read its
    # SLURM_* variables there), exit status 0, gone from squeue
    jobs = sorted(p.name for p in (sweep_dir / ".submitit").glob("*_*") if p.is_dir())
    assert len(jobs) == 2 and len({j.split("_")[0] for j in jobs}) == 1, jobs
    slurm.wait_empty(timeout=30)
    ctld = slurm.ctld_log()
    for job in jobs:
        folder = sweep_dir / ".submitit" / job
        assert list(folder.glob("*_result.pkl")), job
        log = next(folder.glob("*_log.out")).read_text()
        assert f"JobEnvironment(job_id={job}, hostname={slurm.node}" in log, log[-2000:]
        assert re.search(rf"Allocate JobId={job}\(\d+\) NodeList={slurm.node} ", ctld), job
        assert re.search(rf"_job_complete: JobId={job}\(\d+\) WEXITSTATUS 0", ctld), job

    parent, children = runs_under(ws, sweep_dir)
    assert parent.info.status == "FINISHED"
    assert len(children) == 2
    assert {int(c.data.params["lora.rank"]) for c in children} == {2, 4}
    assert all(c.info.status == "FINISHED" for c in children)
    assert slurm.queue() == []
