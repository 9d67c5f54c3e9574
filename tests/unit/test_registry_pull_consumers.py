"""`ltx-lora pull NAME@ALIAS --for comfyui|ltx-pipelines|diffusers`: each consumer its own file,
and a consumer the export refused gets the export's reason, not a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ltx.exports import EXPORTS_RECORD, FILE_STEMS, file_name
from registry.pull import CONSUMERS, pull
from stagekit.errors import UserError
from stagekit.hashing import sha256_file
from tests.unit.test_registry_register import (
    NAME,
    client,
    make_eval_dir,
    make_train_dir,
    register,
    template_db,
)

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
__all__ = ["client", "template_db"]  # fixtures used by name

REFUSAL = "no ltx-pipelines file for a dora adapter: ltx-core fuses only lora_A/lora_B pairs"


def test_registry_names_the_files_the_exporter_writes():
    assert CONSUMERS == FILE_STEMS
    assert {c: file_name(c) for c in CONSUMERS} == {
        "comfyui": "comfyui.safetensors",
        "ltx-pipelines": "ltx-pipelines.safetensors",
        "diffusers": "adapter.safetensors",
    }


def _with_consumers(train: Path, refused: bool) -> Path:
    """A made-up export: an ltx-pipelines file (or its refusal) and exports.json."""
    adapter = train / "adapter"
    consumers = {
        "diffusers": {"file": "adapter.safetensors", "outcome": "converted"},
        "comfyui": {"file": "comfyui.safetensors", "outcome": "converted"},
    }
    if refused:
        consumers["ltx-pipelines"] = {"outcome": "refused", "reason": REFUSAL + "; instead: …"}
    else:
        rng = np.random.default_rng(7)
        lora = {
            "diffusion_model.blocks.0.attn1.to_q.lora_A.weight": rng.standard_normal((4, 16)),
            "diffusion_model.blocks.0.attn1.to_q.lora_B.weight": rng.standard_normal((16, 4)),
        }
        lora = {k: v.astype(np.float32) for k, v in lora.items()}
        save_file(lora, adapter / "ltx-pipelines.safetensors", metadata={"base_model": "x"})
        consumers["ltx-pipelines"] = {"file": "ltx-pipelines.safetensors", "outcome": "converted"}
    record = {"adapter_kind": "dora" if refused else "lora", "consumers": consumers}
    (adapter / EXPORTS_RECORD).write_text(json.dumps(record))
    return train


def test_each_consumer_pulls_its_own_file(client, tmp_path):
    train = _with_consumers(make_train_dir(tmp_path / "train"), refused=False)
    register(client, train, make_eval_dir(tmp_path / "eval"))
    names = {}
    for consumer in CONSUMERS:
        got = pull(client, NAME, "candidate", consumer, tmp_path / "out")
        source = train / "adapter" / file_name(consumer)
        assert got.sha256 == sha256_file(source) == sha256_file(got.path)
        names[consumer] = got.path.name
    assert names == {
        "comfyui": f"{NAME}.safetensors",
        "ltx-pipelines": f"{NAME}.ltx-pipelines.safetensors",
        "diffusers": "pytorch_lora_weights.safetensors",
    }


def test_a_refused_consumer_gets_the_exports_reason(client, tmp_path):
    train = _with_consumers(make_train_dir(tmp_path / "train"), refused=True)
    register(client, train)
    with pytest.raises(UserError, match=f"{NAME} version 1: {REFUSAL}"):
        pull(client, NAME, "candidate", "ltx-pipelines", tmp_path / "out")
    assert not (tmp_path / "out" / f"{NAME}.ltx-pipelines.safetensors").exists()
    assert pull(client, NAME, "candidate", "comfyui", tmp_path / "out").path.is_file()


def test_cli_pull_for(client, tmp_path, capsys):
    from ltx_lora.cli import main

    train = _with_consumers(make_train_dir(tmp_path / "train"), refused=False)
    register(client, train)
    ws = ["--workspace", str(tmp_path)]
    out = tmp_path / "loras"
    assert main([*ws, "pull", f"{NAME}@candidate", "--for", "ltx-pipelines", "--to", str(out)]) == 0
    assert (out / f"{NAME}.ltx-pipelines.safetensors").is_file()
    assert "(ltx-pipelines)" in capsys.readouterr().out
