"""On a filesystem with reflinks (XFS here, a loop-mounted image) the store's copy of an adapter
shares the training file's blocks, costs no bytes, and is still a separate file: rewriting the
training output in place leaves the registered version intact.

Needs root, `mkfs.xfs` (Debian's xfsprogs: `make test` installs it) and loop devices; where they
are missing, the tests say so and skip."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from registry.digest import clone, copy_hashed
from registry.pull import pull
from registry.store import local_tracking_uri, open_client
from tests.unit.test_registry_register import (
    LINEAGE,
    make_train_dir,
    register,
    shared_template_db,
)

MB = 1 << 20


@pytest.fixture(scope="module")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        pytest.skip("needs root and mkfs.xfs (apt-get install xfsprogs) for a loop-mounted XFS")
    root = tmp_path_factory.mktemp("xfs")
    image, mount = root / "xfs.img", root / "mnt"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(600 * MB)
    made = subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], capture_output=True)
    mounted = (
        made.returncode == 0
        and not subprocess.run(
            ["mount", "-o", "loop", str(image), str(mount)], capture_output=True
        ).returncode
    )
    if not mounted:
        pytest.skip(f"cannot make or loop-mount an XFS image here: {made.stderr[-300:]!r}")
    try:
        yield mount
    finally:
        # lazily: MLflow keeps the registry database open for the rest of the process
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def free_bytes(path: Path) -> int:
    os.sync()
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def big_adapter(path: Path, mb: int, seed: int) -> None:
    weights = np.random.default_rng(seed).standard_normal(mb * MB // 4).astype(np.float32)
    meta = {"base_model": LINEAGE["base_model"], "rank": "4"}
    save_file({"lora_A.weight": weights.reshape(-1, 1024)}, path, metadata=meta)


def test_a_clone_costs_no_bytes_and_is_a_separate_file(xfs: Path, tmp_path: Path) -> None:
    src, dst = xfs / "a.bin", xfs / "b.bin"
    src.write_bytes(os.urandom(64 * MB))
    before = free_bytes(xfs)
    digest, n = copy_hashed(src, dst)
    assert before - free_bytes(xfs) < 4 * MB  # a copy would take 64 MB
    assert n == 64 * MB and digest == hashlib.sha256(src.read_bytes()).hexdigest()
    with open(src, "r+b") as f:  # rewrite the source in place, as `cp x a.bin` does
        f.write(b"changed")
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == digest
    # across filesystems there is nothing to share: False, and the caller copies
    assert not clone(src, tmp_path / "elsewhere.bin")


def test_registering_on_xfs_stores_a_clone_that_survives_an_in_place_rewrite(
    xfs: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ws = xfs / "ws"
    train = make_train_dir(ws / "train")
    for i, name in enumerate(("adapter.safetensors", "comfyui.safetensors")):
        big_adapter(train / "adapter" / name, 48, seed=i)
    mlflow_dir = ws / ".mlflow"
    mlflow_dir.mkdir()
    shutil.copy(shared_template_db(tmp_path_factory), mlflow_dir / "mlflow.db")
    client = open_client(local_tracking_uri(mlflow_dir), mlflow_dir / "artifacts")
    before = free_bytes(xfs)
    reg = register(client, train)
    assert before - free_bytes(xfs) < 16 * MB  # two 48 MB layouts stored, no bytes copied
    with open(train / "adapter" / "comfyui.safetensors", "r+b") as f:  # rewritten in place
        f.seek(-64, os.SEEK_END)
        f.write(b"\x00" * 64)
    # pull checks every byte against the registered manifest: it raises if the store changed
    pulled = pull(client, reg.name, str(reg.version), "comfyui", ws / "loras")
    rewritten = hashlib.sha256((train / "adapter" / "comfyui.safetensors").read_bytes())
    assert pulled.sha256 != rewritten.hexdigest()
    assert hashlib.sha256(pulled.path.read_bytes()).hexdigest() == pulled.sha256
