"""Data parallel on CPU: 2 processes under torchrun equal 1 process with the same global batch;
with `trainer.distributed=fsdp2` (the base sharded by FSDP2) they equal the ddp processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.integration import train_job
from trainer import checkpoint

JOB = Path(train_job.__file__)
FSDP2_JOB = JOB.with_name("fsdp2_job.py")
STEPS = "6"
# LoRA dropout draws one mask per process: N processes cannot match one process's masks
NO_DROPOUT = "0"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], tmp: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(JOB.parents[2]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, cwd=tmp)
    assert done.returncode == 0, done.stderr[-3000:]


def torchrun(job: Path, *args: str) -> list[str]:
    port = ["--master_port", str(free_port())]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        *port,
        str(job),
        *args,
    ]


@pytest.fixture(scope="module")
def runs(cache_dir, model_path, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ddp")
    common = [str(cache_dir)]
    run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(free_port()),
            str(JOB),
            *common,
            str(root / "two"),
            str(root / "ck2"),
            str(model_path),
            STEPS,
            "1",
        ],
        root,
    )
    run(
        [
            sys.executable,
            str(JOB),
            *common,
            str(root / "one"),
            str(root / "ck1"),
            str(model_path),
            STEPS,
            "2",
        ],
        root,
    )
    return root / "two", root / "one"


def test_two_processes_log_the_single_process_losses(runs) -> None:
    two, one = runs
    rows = [
        [json.loads(r) for r in (d / "metrics.jsonl").read_text().splitlines()] for d in (two, one)
    ]
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]]
    assert [r["loss"] for r in rows[0]] == pytest.approx(
        [r["loss"] for r in rows[1]], rel=1e-4
    )  # batched vs split float32 sums


def test_same_adapter_as_one_process_and_ranks_in_sync(runs) -> None:
    two, one = runs
    a = load_file(two / "adapter/adapter.safetensors")
    b = load_file(one / "adapter/adapter.safetensors")
    assert a.keys() == b.keys()
    # Adam turns float32 noise in near-zero gradients (batched vs split sums) into lr-sized
    # steps, so weights agree in norm, not bit for bit; the losses above agree to 1e-4
    flat_a = torch.cat([a[k].flatten() for k in sorted(a)])
    flat_b = torch.cat([b[k].flatten() for k in sorted(b)])
    assert ((flat_a - flat_b).norm() / flat_b.norm()).item() < 0.02
    final = json.loads((two / "train.json").read_text())["final"]
    assert final["processes"] == 2 and final["rank_weight_max_diff"] == 0.0


def losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


@pytest.fixture(scope="module")
def fsdp2(runs, cache_dir, model_path) -> tuple[Path, Path]:
    """The 2-process ddp run's job under fsdp2, from scratch; and resumed from a copy of the
    ddp run's step-4 checkpoint (the same layout, so either resumes the other)."""
    import shutil

    root = runs[0].parent
    job = [str(cache_dir), str(root / "fsdp2"), str(root / "ck_fsdp2"), str(model_path)]
    run(torchrun(FSDP2_JOB, *job, STEPS, "1"), root)
    shutil.copytree(root / "ck2", root / "ck_resumed")
    for done in (root / "ck_resumed").glob("*/complete"):
        done.unlink()
    job = [str(cache_dir), str(root / "resumed"), str(root / "ck_resumed"), str(model_path)]
    run(torchrun(FSDP2_JOB, *job, STEPS, "1"), root)
    return root / "fsdp2", root / "resumed"


def test_fsdp2_trains_as_ddp_with_half_the_base_per_process(runs, fsdp2) -> None:
    ddp, (sharded, resumed) = runs[0], fsdp2
    steps, expected = zip(*losses(ddp), strict=True)
    for out in (sharded, resumed):
        got = losses(out)
        assert [s for s, _ in got] == list(steps)
        assert [v for _, v in got] == pytest.approx(expected, abs=1e-4)
    final = json.loads((sharded / "train.json").read_text())["final"]
    assert final["distributed"] == "fsdp2" and final["rank_weight_max_diff"] == 0.0
    total, per_rank = final["base_param_bytes"], final["base_param_bytes_per_rank"]
    assert len(per_rank) == 2 and sum(per_rank) == total  # disjoint shards, nothing replicated
    assert all(abs(b / total - 0.5) < 0.02 for b in per_rank), per_rank
    assert "distributed" not in json.loads((ddp / "train.json").read_text())["final"]


def test_fsdp2_exports_and_checkpoints_the_ddp_layout(runs, fsdp2) -> None:
    ddp, (sharded, resumed) = runs[0], fsdp2
    a = load_file(sharded / "adapter/adapter.safetensors")
    b = load_file(ddp / "adapter/adapter.safetensors")
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    flat_a = torch.cat([a[k].flatten() for k in sorted(a)])
    flat_b = torch.cat([b[k].flatten() for k in sorted(b)])
    assert ((flat_a - flat_b).norm() / flat_b.norm()).item() < 1e-3
    for name in ("adapter_ema.safetensors", "comfyui.safetensors"):
        assert (
            load_file(sharded / "adapter" / name).keys() == load_file(ddp / "adapter" / name).keys()
        )
    root = ddp.parent
    (mine,) = (root / "ck_fsdp2").glob("*/step-000004")
    (theirs,) = (root / "ck2").glob("*/step-000004")
    x, y = (checkpoint.load(p) for p in (mine, theirs))
    assert mine.parent.name == theirs.parent.name  # same run fingerprint
    assert x["params"].keys() == y["params"].keys()
    for k in x["params"]:
        assert torch.allclose(x["params"][k], y["params"][k], atol=1e-4)
    got = load_file(resumed / "adapter/adapter.safetensors")
    flat_r = torch.cat([got[k].flatten() for k in sorted(got)])
    assert ((flat_r - flat_b).norm() / flat_b.norm()).item() < 1e-3


def test_an_fsdp_recipe_needs_trainer_distributed_fsdp2(monkeypatch) -> None:
    from stagekit.errors import ConfigError
    from trainer.config import TrainerConfig
    from trainer.runtime import own_sharding

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` fsdp2.yaml sets
    with (
        pytest.raises(ConfigError, match=r"trainer\.distributed=fsdp2"),
        own_sharding(TrainerConfig()),
    ):
        pass
    with own_sharding(TrainerConfig(distributed="fsdp2")):  # Accelerate must not wrap anything
        assert os.environ["ACCELERATE_USE_FSDP"] == "false"
    assert os.environ["ACCELERATE_USE_FSDP"] == "true"
    with pytest.raises(ConfigError, match="validation_every"):
        from trainer.runtime import check_inputs

        check_inputs(TrainerConfig(distributed="fsdp2", validation_every=5), Path("."), {}, None)
