"""registry.digest: one-pass hashing copies and when training's recorded sha256 is reused."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from registry import digest as digest_module
from registry.digest import copy_hashed, reusable_digest, safetensors_size
from registry.inputs import file_manifest
from stagekit.hashing import sha256_file


def _adapter(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    save_file({"w": rng.standard_normal((64, 33)).astype(np.float32)}, path, metadata={"a": "b"})
    return path


def _record_after(path: Path) -> None:
    """Write `path` strictly after every file written so far (ctime ticks are coarse)."""
    time.sleep(0.02)
    path.write_text("{}")


@pytest.mark.parametrize("kernel", [True, False], ids=["sendfile", "no-sendfile"])
@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 20) - 1, 1 << 20, 3 * (1 << 20) + 7])
def test_copy_hashed_writes_the_same_bytes_and_their_sha256(tmp_path, monkeypatch, size, kernel):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    dst = tmp_path / "dst.bin"
    dst.write_bytes(b"stale bytes, longer than some sources")  # overwritten, not appended to
    if not kernel:  # a filesystem where sendfile between files fails part-way
        calls = []

        def sendfile(*args):
            calls.append(args)
            if len(calls) > 1:
                raise OSError(22, "Invalid argument")
            return os.sendfile(*args)

        monkeypatch.setattr(digest_module.os, "sendfile", sendfile)
    digest, n = copy_hashed(src, dst, chunk=1 << 20)
    assert n == size
    assert dst.read_bytes() == src.read_bytes()
    assert digest == sha256_file(src)


def test_safetensors_size_is_the_file_size_and_flags_truncation(tmp_path):
    f = _adapter(tmp_path / "a.safetensors")
    assert safetensors_size(f) == f.stat().st_size
    (tmp_path / "junk").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{not json")
    assert safetensors_size(tmp_path / "junk") is None


def test_a_recorded_digest_is_reused_only_while_the_file_is_unchanged(tmp_path):
    f = _adapter(tmp_path / "a.safetensors")
    record = tmp_path / "train.json"
    _record_after(record)
    real = sha256_file(f)
    assert reusable_digest(f, real, record) == real
    assert reusable_digest(f, None, record) is None
    assert reusable_digest(f, "abc", record) is None  # not a sha256

    # The adapter replaced after training: its ctime is newer than the record.
    time.sleep(0.02)
    _adapter(tmp_path / "b.safetensors", seed=1).replace(f)
    assert reusable_digest(f, real, record) is None
    # Even with its mtime set back: ctime cannot be set back.
    os.utime(f, ns=(1, 1))
    assert reusable_digest(f, real, record) is None


def test_a_truncated_file_is_hashed_not_trusted(tmp_path):
    f = _adapter(tmp_path / "a.safetensors")
    real = sha256_file(f)
    with open(f, "r+b") as h:
        h.truncate(f.stat().st_size - 4)
    record = tmp_path / "train.json"
    _record_after(record)  # even a record written after the damage
    assert reusable_digest(f, real, record) is None


def test_file_manifest_mixes_reused_and_computed_digests(tmp_path):
    a = _adapter(tmp_path / "a.safetensors")
    record = tmp_path / "train.json"
    _record_after(record)
    time.sleep(0.02)
    b = _adapter(tmp_path / "b.safetensors", seed=2)  # written after the record: hashed
    fake = "f" * 64  # what a reused digest would show: proves a was not re-read
    manifest = file_manifest({"a": a, "b": b}, {"a": fake, "b": fake}, record)
    assert manifest["a"] == {"sha256": fake, "bytes": a.stat().st_size}
    assert manifest["b"] == {"sha256": sha256_file(b), "bytes": b.stat().st_size}
    assert file_manifest({"a": a})["a"]["sha256"] == sha256_file(a)  # no record: hashed
