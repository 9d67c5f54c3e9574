"""dataset_status: the raw folder's DVC hash, equal to what `dvc add` records, offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curation.status import dataset_status, format_status
from stagekit.errors import UserError

DVC = Path(sys.executable).parent / "dvc"


def test_hash_matches_dvc_add_and_edits_are_caught(tmp_path: Path) -> None:
    raw = tmp_path / "datasets" / "acme" / "raw"
    (raw / "sub dir").mkdir(parents=True)
    (raw / "a.mp4").write_bytes(b"\x00" * 100)
    (raw / "sub dir" / "é clip.mp4").write_bytes(b"\x01" * 50)
    status = dataset_status(raw.parent)
    assert (status["state"], status["nfiles"], status["size"]) == ("untracked", 2, 150)
    assert "dvc add datasets/acme/raw" in format_status(status)
    env = {"DVC_NO_ANALYTICS": "1", "PATH": str(DVC.parent) + ":/usr/bin:/bin"}
    for cmd in ([str(DVC), "init", "--no-scm", "-q"], [str(DVC), "add", "-q", str(raw)]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True)
    recorded = yaml.safe_load((raw.parent / "raw.dvc").read_text())["outs"][0]["md5"]
    status = dataset_status(raw.parent)
    assert status["state"] == "tracked" and status["dvc_hash"] == recorded
    assert recorded.endswith(".dir") and recorded in format_status(status)
    (raw / "new.mp4").write_bytes(b"\x02")
    changed = dataset_status(raw.parent)
    assert changed["state"] == "modified" and changed["recorded_hash"] == recorded
    assert changed["dvc_hash"] != recorded and "run dvc add" in format_status(changed)


def test_missing_raw_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="put the dataset's clips there"):
        dataset_status(tmp_path / "nothing")
