"""A full disk during training's writes, on a real full filesystem (a 2 MiB tmpfs): a checkpoint
or an adapter export that does not fit stops training with one line naming the path and the
space left, leaves nothing half-written (no step folder, no adapter folder, no temp), and the
same command succeeds once space is freed.

Needs root (to mount the tmpfs); elsewhere the tests say so and skip."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ltx.config import ModelConfig
from stagekit.errors import DiskFullError
from tests.integration import train_job
from trainer.config import LoraConfig

LEFT = 16 << 10  # what the filler leaves: less than a tiny checkpoint or export (~60-80 KiB)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a 2 MiB tmpfs")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr[-300:]!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill(fs: Path, leave: int = LEFT) -> Path:
    """A file taking all but `leave` bytes of `fs`."""
    st = os.statvfs(fs)
    filler = fs / "filler"
    filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - leave))
    return filler


def train(cache: Path, model: Path, out: Path, ckpt: Path, steps: int) -> dict[str, Any]:
    from trainer.train import train as run_training

    return run_training(
        cache,
        out,
        model,
        ModelConfig(name="ltx2-tiny", source="tiny"),
        LoraConfig(rank=4, alpha=4),
        train_job.job_config(steps),  # a checkpoint every 4 steps
        seed=0,
        trigger="zorblat",
        lineage=train_job.LINEAGE,
        resolved_config={},
        checkpoint_root=ckpt,
    )


def assert_one_line(err: DiskFullError, where: Path) -> None:
    message = str(err)
    assert "\n" not in message and str(where) in message, message
    assert "no space left" in message and "free there" in message, message


def test_a_checkpoint_that_does_not_fit_stops_training_in_one_line(
    tiny_fs: Path, cache_dir: Path, model_path: Path, tmp_path: Path
) -> None:
    filler = fill(tiny_fs)
    ckpt, out = tiny_fs / "ckpt", tmp_path / "train"
    with pytest.raises(DiskFullError) as err:
        train(cache_dir, model_path, out, ckpt, steps=8)
    (run,) = ckpt.iterdir()  # run.json fitted, the step-4 checkpoint did not
    assert_one_line(err.value, run / "step-000004")
    assert sorted(p.name for p in run.iterdir()) == ["run.json"]  # no step folder, no temp
    assert not out.exists()

    filler.unlink()  # what the message says to do
    assert not train(cache_dir, model_path, out, ckpt, steps=8)["skipped"]
    assert (run / "step-000004" / "tensors.safetensors").is_file()
    assert (out / "adapter" / "adapter.safetensors").is_file()


def test_an_export_that_does_not_fit_leaves_no_adapter(
    tiny_fs: Path, cache_dir: Path, model_path: Path, tmp_path: Path
) -> None:
    filler = fill(tiny_fs)
    out, ckpt = tiny_fs / "train", tmp_path / "ckpt"
    with pytest.raises(DiskFullError) as err:
        train(cache_dir, model_path, out, ckpt, steps=2)
    assert_one_line(err.value, out)
    assert [p.name for p in tiny_fs.iterdir()] == ["filler"]  # no adapter folder, no temp
    free = os.statvfs(tiny_fs).f_bavail * os.statvfs(tiny_fs).f_frsize
    assert f"({free >> 10}.0 KiB free there)" in str(err.value)  # the space really left

    filler.unlink()
    assert not train(cache_dir, model_path, out, ckpt, steps=2)["skipped"]
    assert {"adapter.safetensors", "comfyui.safetensors"} <= {
        p.name for p in (out / "adapter").iterdir()
    }
