"""The registry stays light: no torch/diffusers/transformers/peft, and mlflow only when used."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tests.unit.test_registry_register import shared_template_db

HEAVY = ["torch", "diffusers", "transformers", "peft", "accelerate"]
REPO = Path(__file__).resolve().parents[2]


def loaded_after(script: str) -> dict[str, bool]:
    """Run `script` in a fresh interpreter; which of HEAVY (and mlflow) ended up imported."""
    watched = [*HEAVY, "mlflow"]
    probe = f"\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {watched!r}}}))"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script) + probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_registry_loads_nothing_heavy():
    loaded = loaded_after(
        "import registry, registry.config, registry.store, registry.register, registry.describe,"
        " registry.promote, registry.read, registry.pull, registry.commands, registry.server"
    )
    assert not any(loaded[m] for m in HEAVY), loaded
    assert not loaded["mlflow"]  # imported lazily: importing it starts MLflow's telemetry client


def test_a_whole_registration_loads_nothing_heavy(tmp_path, tmp_path_factory):
    (tmp_path / ".mlflow").mkdir()  # the session's fresh schema: making one costs seconds
    shutil.copy(shared_template_db(tmp_path_factory), tmp_path / ".mlflow" / "mlflow.db")
    train = tmp_path / "train"
    (train / "adapter").mkdir(parents=True)
    save_file(
        {"a.lora_A.weight": np.ones((2, 4), np.float32)},
        train / "adapter/adapter.safetensors",
        metadata={"base_model": "x"},
    )
    lineage = dict.fromkeys(
        ["dataset_hash", "base_model", "base_model_hash", "config_hash", "git_commit"], "x"
    )
    record = {"run_name": "r", "lineage": {**lineage, "ltx_version": "2.0"}, "params": {"rank": 2}}
    (train / "train.json").write_text(json.dumps(record))
    loaded = loaded_after(
        f"""
        from pathlib import Path
        from registry.describe import describe_version
        from registry.register import register_adapter
        from registry.store import local_tracking_uri, open_client

        root = Path({str(tmp_path)!r})
        client = open_client(local_tracking_uri(root / ".mlflow"), root / ".mlflow" / "artifacts")
        reg = register_adapter(
            client, name="acme.x", train_dir=root / "train", eval_dir=None, experiment="ltx-lora"
        )
        assert describe_version(client, "acme.x", "candidate")["version"] == reg.version == 1
        """
    )
    assert loaded["mlflow"] and not any(loaded[m] for m in HEAVY), loaded
