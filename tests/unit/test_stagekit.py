"""Atomic writes, content hashes, stage records and the privacy switches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stagekit.files import atomic_dir, atomic_path, read_jsonl, write_jsonl
from stagekit.hashing import sha256_json, sha256_tree
from stagekit.lineage import git_commit
from stagekit.privacy import OFFLINE_ENV
from stagekit.stage import load_record, save_record


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    dest = tmp_path / "a.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_dir_swaps_whole_folders(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with atomic_dir(dest) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "y").write_text("2")
        raise RuntimeError("killed")
    assert sorted(p.name for p in dest.iterdir()) == ["x"]
    with atomic_dir(dest) as tmp:
        (tmp / "z").write_text("3")
    assert sorted(p.name for p in dest.iterdir()) == ["z"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_writes_honour_the_umask(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as tmp:
            pass
        # safetensors replaces the file it writes with one of mode 0600: an adapter that
        # ComfyUI (another user) cannot read; the rename keeps the umask's mode instead
        with atomic_path(tmp_path / "a.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o644


def test_jsonl_round_trip(tmp_path: Path) -> None:
    rows = [{"a": 1}, {"b": [1, 2]}]
    write_jsonl(tmp_path / "m.jsonl", rows)
    assert read_jsonl(tmp_path / "m.jsonl") == rows


def test_hashes_are_order_free_and_content_sensitive(tmp_path: Path) -> None:
    assert sha256_json({"a": 1, "b": 2}) == sha256_json({"b": 2, "a": 1})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    before = sha256_tree(tmp_path / "d")
    (tmp_path / "d" / "f").write_text("y")
    assert sha256_tree(tmp_path / "d") != before


def test_stage_record_matches_only_its_fingerprint(tmp_path: Path) -> None:
    assert load_record(tmp_path, "fp") is None
    save_record(tmp_path, "train", "fp", {"steps": 3})
    assert load_record(tmp_path, "fp")["steps"] == 3
    assert load_record(tmp_path, "other") is None


def test_git_commit_outside_a_repo_is_unknown(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == "unknown"


def test_git_commit_marks_local_edits(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }

    def run(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(tmp_path), *args], check=True, env=env, capture_output=True
        )

    run("init", "-q")
    (tmp_path / "f").write_text("1")
    run("add", "f")
    run("commit", "-qm", "c")
    sha = git_commit(tmp_path)
    assert len(sha) == 40
    (tmp_path / "f").write_text("2")
    assert git_commit(tmp_path) == f"{sha}-dirty"


def test_cli_sets_every_offline_switch_unless_the_user_did() -> None:
    code = (
        "import os; from ltx_lora.cli import build_parser;"
        "from stagekit.privacy import apply_offline_defaults; apply_offline_defaults();"
        "import json; print(json.dumps(dict(os.environ)))"
    )
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
    env["WANDB_MODE"] = "online"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    import json

    seen = json.loads(out)
    assert seen["WANDB_MODE"] == "online"  # an explicit choice is kept
    assert all(seen[k] == v for k, v in OFFLINE_ENV.items() if k != "WANDB_MODE")


def test_a_run_does_not_warn_about_a_hub_kernel_it_never_fetches() -> None:
    """peft imports bitsandbytes (when installed), which warns on AVX512-BF16 CPUs that it
    could not fetch a kernel from the hub: offline on purpose, so the warning is silenced.
    (On a CPU without AVX512-BF16 bitsandbytes never tries, and this passes either way.)"""
    code = (
        "from stagekit.privacy import apply_offline_defaults; apply_offline_defaults();"
        "import logging; logging.basicConfig(); import peft"
    )
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_ENV}
    err = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stderr
    assert "kernels-community" not in err
