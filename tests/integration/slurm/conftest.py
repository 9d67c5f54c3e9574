"""The SLURM group's cluster: Debian's slurm-wlm and munge daemons, one node, started once for
the group (package scope: stopped after its last test, not left idling through the suite)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagekit.workspace import Workspace
from tests.integration.slurm_cluster import SlurmCluster, missing, slurm_cluster

PACKAGES = ["slurm-wlm", "munge"]


def ensure_packages() -> list[str]:
    """What is still missing after trying `apt-get install` (root only, as CI's set-up is)."""
    if missing() and os.geteuid() == 0:
        install = ["apt-get", "install", "-y", "-q", *PACKAGES]
        if subprocess.run(install, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=900)
            subprocess.run(install, capture_output=True, timeout=900)
    return missing()


@pytest.fixture(scope="package")
def slurm(tmp_path_factory) -> Iterator[SlurmCluster]:
    """A running single-node cluster; `$SLURM_CONF` points every client of this process (and
    what it spawns: submitit, sbatch's jobs) at it while the group runs."""
    lacking = ensure_packages()
    if lacking:
        pytest.skip(
            f"SLURM test cluster unavailable: {', '.join(lacking)} not installed and "
            f"`apt-get install {' '.join(PACKAGES)}` failed (needs root and the package mirror)"
        )
    root = Path(tmp_path_factory.mktemp("slurm"))
    with slurm_cluster(root, cpus=2) as cluster, pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster  # a job a failed test left behind is cancelled when the cluster stops


def workspace_over(workspace: Workspace, cache_dir: Path, root: Path) -> Workspace:
    """A workspace of its own (MLflow store, outputs, checkpoints) over the session's sample
    dataset, tiny model and cache, which jobs only read: what a cluster's shared FS holds."""
    own = Workspace(root)
    (own.root / "datasets").symlink_to(workspace.root / "datasets")
    (own.root / ".models").symlink_to(workspace.models)
    own.outputs("sample").mkdir(parents=True)
    own.cache("sample").symlink_to(cache_dir)
    return own


@pytest.fixture(scope="package")
def new_ws(workspace: Workspace, cache_dir: Path, tmp_path_factory):
    """Makes fresh workspaces: `new_ws("name")`."""
    return lambda name: workspace_over(workspace, cache_dir, tmp_path_factory.mktemp(name))


@pytest.fixture(scope="package")
def ws(workspace: Workspace, cache_dir: Path, tmp_path_factory) -> Workspace:
    return workspace_over(workspace, cache_dir, tmp_path_factory.mktemp("slurmws"))
