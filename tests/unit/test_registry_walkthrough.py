"""docs/registry.md's agency walkthrough, run command by command (as written there) on the
workspace's sqlite. The onboarding commands need the team server: they are tested in
tests/integration/test_registry_server.py."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest

from ltx_lora.cli import main
from registry.register import register_adapter
from registry.store import local_tracking_uri, open_client
from stagekit.hashing import sha256_file
from tests.unit.test_registry_register import (
    CARD,
    make_eval_dir,
    make_train_dir,
    shared_template_db,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "registry.md"
SERVER_ONLY = ("registry serve", "registry add-client")


def walkthrough() -> list[list[str]]:
    """The `ltx-lora` commands between the walkthrough markers, without their env prefix."""
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- agency-walkthrough:start -->")[1].split("<!-- agency-walkthrough:end")
    commands = []
    for line in block[0].splitlines():
        line = re.sub(r"^(\w+='[^']*' )+", "", line.strip())  # LTX_LORA_CLIENT_PASSWORD='…'
        if line.startswith("ltx-lora ") and not any(s in line for s in SERVER_ONLY):
            commands.append(shlex.split(line, comments=True)[1:])
    return commands


@pytest.fixture
def workspace(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Any:
    """acme.mascot versions 1 and 2 (2 scores higher), a base licence file, cwd = workspace."""
    mlflow_dir = tmp_path / ".mlflow"
    mlflow_dir.mkdir()
    shutil.copy(shared_template_db(tmp_path_factory), mlflow_dir / "mlflow.db")
    client = open_client(local_tracking_uri(mlflow_dir), mlflow_dir / "artifacts")
    for seed, score in ((1, 0.4), (2, 0.5)):
        register_adapter(
            client,
            name="acme.mascot",
            train_dir=make_train_dir(tmp_path / f"t{seed}", seed=seed),
            eval_dir=make_eval_dir(tmp_path / f"e{seed}", scores={"fidelity_adapter": score}),
            experiment="ltx-lora",
            dataset_card=CARD,
        )
    (tmp_path / "models" / "ltx-2").mkdir(parents=True)
    (tmp_path / "models" / "ltx-2" / "LICENSE").write_text("LTX-2 Community License …\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LTX_LORA_WORKSPACE", str(tmp_path))
    return tmp_path


def test_every_walkthrough_command_runs_as_documented(workspace, capsys):
    commands = walkthrough()
    assert [c[:2] for c in commands] == [
        ["registry", "show"],
        ["registry", "licence"],
        ["registry", "promote"],
        ["registry", "promote"],
        ["registry", "sync"],
        ["registry", "rollback"],
        ["registry", "sync"],
        ["registry", "archive"],
        ["registry", "history"],
    ]
    outputs = []
    for argv in commands:
        assert main(argv) == 0, (argv, capsys.readouterr().err)
        outputs.append(capsys.readouterr().out)
    show, licence, _, _, first_sync, _, second_sync, archive, history = outputs
    assert "distribution      client" in show and "evaluated on      2.0 (pass)" in show
    sha = sha256_file(workspace / "models" / "ltx-2" / "LICENSE")
    assert sha in licence and "LT-812" in licence

    loras = workspace / "ComfyUI" / "models" / "loras"
    assert "wrote" in first_sync and "wrote" in second_sync  # v2, then v1 back after rollback
    manifest = json.loads((loras / "ltx-lora-sync.json").read_text())
    entry = manifest["files"]["acme.mascot.safetensors"]
    assert entry["version"] == 1
    assert sha256_file(loras / "acme.mascot.safetensors") == entry["sha256"]
    assert "files kept until" in archive and "alias candidate removed" in archive
    actions = [line.split()[1] for line in history.splitlines()]
    assert actions == ["licence", "promote", "promote", "rollback", "archive"]
    assert os.environ["LTX_LORA_WORKSPACE"] == str(workspace)
