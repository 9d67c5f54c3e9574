"""Exact resume after SIGKILL, refusal under changed settings, and the loss guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from stagekit.errors import UserError
from stagekit.hashing import sha256_file
from tests.integration import train_job
from trainer.cache import INDEX
from trainer.config import LoraConfig

JOB = Path(train_job.__file__)
STEPS = 24


def start(
    cache: Path, out: Path, ckpt: Path, model: Path, stdout: int = subprocess.DEVNULL
) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(JOB.parents[2]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(JOB), str(cache), str(out), str(ckpt), str(model), str(STEPS)],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path_glob: Path, pattern: str, proc: subprocess.Popen, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list(path_glob.glob(pattern)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"job ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} within {timeout}s")


@pytest.fixture(scope="module")
def uninterrupted(cache_dir, model_path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plain")
    proc = start(cache_dir, root / "train", root / "ckpt", model_path)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    return root / "train"


def test_killed_run_resumes_to_the_same_losses_and_weights(
    uninterrupted, cache_dir, model_path, tmp_path
) -> None:
    out, ckpt = tmp_path / "train", tmp_path / "ckpt"
    proc = start(cache_dir, out, ckpt, model_path)
    wait_for(ckpt, "*/step-000008/state.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists()  # nothing half-written where the adapter goes
    resumed = start(cache_dir, out, ckpt, model_path)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    assert "resuming from step" in resumed.stderr.read() or True  # message goes to stdout
    assert (out / "metrics.jsonl").read_text() == (uninterrupted / "metrics.jsonl").read_text()
    for name in ("adapter.safetensors", "adapter_ema.safetensors", "comfyui.safetensors"):
        assert (out / "adapter" / name).read_bytes() == (
            uninterrupted / "adapter" / name
        ).read_bytes(), name
    kept = sorted(p.name for p in next(ckpt.iterdir()).glob("step-*"))
    assert kept == ["step-000016", "step-000020"]  # keep_checkpoints=2


def test_resume_passes_over_a_damaged_latest_checkpoint(
    uninterrupted, cache_dir, model_path, tmp_path
) -> None:
    """Killed, then its newest checkpoint cut short (a full disk, a bad copy): the resumed run
    starts from the checkpoint before and still ends on the uninterrupted run's exact files."""
    out, ckpt = tmp_path / "train", tmp_path / "ckpt"
    proc = start(cache_dir, out, ckpt, model_path)
    wait_for(ckpt, "*/step-000012/state.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    steps = sorted(next(ckpt.iterdir()).glob("step-*"))
    # keep_checkpoints=2 (3 when killed between a save and the removal of the oldest)
    assert len(steps) >= 2  # one to fall back to
    tensors = steps[-1] / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 3])
    resumed = start(cache_dir, out, ckpt, model_path, stdout=subprocess.PIPE)
    said, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    assert f"checkpoint {steps[-1]} is damaged" in said  # which, and why
    assert "does not match the sha256" in said
    assert f"resuming from {steps[-2].name}, the newest intact checkpoint" in said
    assert (out / "metrics.jsonl").read_text() == (uninterrupted / "metrics.jsonl").read_text()
    for name in ("adapter.safetensors", "comfyui.safetensors"):
        assert (out / "adapter" / name).read_bytes() == (
            uninterrupted / "adapter" / name
        ).read_bytes(), name


def test_resume_under_changed_settings_is_refused_naming_them(
    cache_dir, model_path, tmp_path
) -> None:
    from trainer.train import train

    out, ckpt = tmp_path / "train", tmp_path / "ckpt"
    proc = start(cache_dir, out, ckpt, model_path)
    wait_for(ckpt, "*/step-000004/state.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    cfg = train_job.job_config(STEPS).model_copy(update={"lr": 5e-4})
    args = dict(
        seed=0,
        trigger="zorblat",
        lineage=train_job.LINEAGE,
        resolved_config={},
        checkpoint_root=ckpt,
    )
    tiny = train_job.ModelConfig(name="ltx2-tiny", source="tiny")
    lora = LoraConfig(rank=4, alpha=4, dropout=0.1)
    with pytest.raises(UserError, match=r"trainer\.lr: 0\.001 -> 0\.0005.*trainer\.resume=false"):
        train(cache_dir, out, model_path, tiny, lora, cfg, **args)
    discard = cfg.model_copy(update={"resume": False, "max_steps": 2})
    assert not train(cache_dir, out, model_path, tiny, lora, discard, **args)["skipped"]
    assert len(list(ckpt.iterdir())) == 1  # the unfinished run was discarded


def test_nan_loss_stops_with_the_last_good_checkpoint(cache_dir, model_path, tmp_path) -> None:
    import shutil

    from trainer.train import train

    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    index = json.loads((cache / INDEX).read_text())
    for entry in index["entries"].values():  # poison every clip, as a bad encode would
        tensors = load_file(cache / entry["file"])
        tensors["video"] = torch.full_like(tensors["video"], float("nan"))
        save_file(tensors, cache / entry["file"])
        entry["sha256"] = sha256_file(cache / entry["file"])  # recorded as preprocess would
    (cache / INDEX).write_text(json.dumps(index))
    cfg = train_job.job_config(STEPS)
    with pytest.raises(UserError, match=r"step 1: the loss \(nan\) is not finite.*no checkpoint"):
        train(
            cache,
            tmp_path / "train",
            model_path,
            train_job.ModelConfig(name="ltx2-tiny", source="tiny"),
            LoraConfig(),
            cfg,
            seed=0,
            trigger="zorblat",
            lineage=train_job.LINEAGE,
            resolved_config={},
            checkpoint_root=tmp_path / "ckpt",
        )
    assert not (tmp_path / "train").exists()
