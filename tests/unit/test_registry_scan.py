"""`register` scans every tensor first: NaN, Inf, an all-zero update or one below numeric noise
is refused with the keys named, and nothing reaches the registry (no run, model or version)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from registry.scan import check_adapter
from stagekit.errors import UserError
from tests.unit.test_registry_register import NAME, client, make_train_dir, register, template_db

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
__all__ = ["client", "template_db"]  # fixtures used by name

KEY = "transformer.blocks.0.attn1.to_q"


def _rewrite(train: Path, name: str, change) -> None:
    """Rewrite one adapter file of a made-up training folder with `change(tensors)` applied."""
    from safetensors.numpy import load_file

    path = train / "adapter" / name
    tensors = load_file(str(path))
    with open(path, "rb") as f:
        meta = json.loads(f.read(int.from_bytes(f.read(8), "little")))["__metadata__"]
    change(tensors)
    save_file(tensors, str(path), metadata=meta)


def _nothing_registered(client) -> None:
    assert client.search_registered_models() == []
    exp = client.get_experiment_by_name("ltx-lora")
    assert exp is None or client.search_runs([exp.experiment_id]) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_anywhere_is_refused_and_nothing_is_written(client, tmp_path, bad):
    train = make_train_dir(tmp_path / "train")

    def poison(t):
        t["diffusion_model.blocks.0.attn1.to_q.lora_A.weight"][1, 2] = bad

    _rewrite(train, "comfyui.safetensors", poison)
    with pytest.raises(UserError, match=r"comfyui\.safetensors: NaN or Inf in diff") as e:
        register(client, train)
    assert "nothing was registered" in str(e.value)
    print(e.value)
    _nothing_registered(client)


def test_all_zero_lora_b_is_refused_naming_the_keys(client, tmp_path):
    train = make_train_dir(tmp_path / "train")

    def zero(t):
        t[f"{KEY}.lora_B.weight"][:] = 0

    _rewrite(train, "adapter.safetensors", zero)
    with pytest.raises(UserError, match=f"every lora_B is all zero \\({KEY}.lora_B.weight\\)"):
        register(client, train)
    _nothing_registered(client)


def test_an_update_below_float32_noise_of_the_base_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 16)).astype(np.float32)
    b = (rng.standard_normal((16, 4)) * 1e-12).astype(np.float32)
    path = tmp_path / "adapter.safetensors"

    def write(norm: float) -> None:
        meta = {"base_weight_norms": json.dumps({"blocks.0.attn1.to_q": norm})}
        save_file({f"{KEY}.lora_A.weight": a, f"{KEY}.lora_B.weight": b}, str(path), meta)

    write(100.0)  # ‖BA‖ ~ 1e-11 ≤ 1.2e-7 · 100
    with pytest.raises(UserError, match="below numeric noise"):
        check_adapter({"adapter.safetensors": path})
    write(1e-6)  # the same update on a tiny base weight is real
    check_adapter({"adapter.safetensors": path})


def test_bf16_tensors_are_read_exactly(tmp_path):
    """bf16 has no numpy dtype: the scan widens the raw bits (a NaN in bf16 is found)."""
    path = tmp_path / "adapter.safetensors"
    header = {
        f"{KEY}.lora_A.weight": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
        f"{KEY}.lora_B.weight": {"dtype": "BF16", "shape": [2], "data_offsets": [4, 8]},
    }
    raw = json.dumps(header).encode()
    # 1.0 = 0x3F80, 2.0 = 0x4000, NaN = 0x7FC0
    data = np.array([0x3F80, 0x4000, 0x3F80, 0x7FC0], dtype="<u2").tobytes()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    with pytest.raises(UserError, match=r"NaN or Inf in .*lora_B"):
        check_adapter({"adapter.safetensors": path})


def test_a_real_export_passes_the_scan(model_dir, tmp_path):
    """What `ltx-lora train` writes for each kind is accepted (with its base norms)."""
    import torch

    from ltx.loading import load_components
    from ltx.lora import add_lora
    from trainer.export import export_adapter

    for kind in ("lora", "dora", "lokr"):
        transformer = load_components(model_dir, ["transformer"])["transformer"]
        add_lora(transformer, 1, 1.0, 0.0, "video_attention", kind=kind)
        with torch.no_grad():
            for name, p in transformer.named_parameters():
                if "lora_B" in name or "lokr_w1" in name:
                    p.add_(0.01)
        files = export_adapter(transformer.eval(), tmp_path / kind, {"base_model": "tiny"})
        check_adapter({f.name: f for f in files})


def test_duplicate_registration_names_the_existing_version(client, tmp_path):
    train = make_train_dir(tmp_path / "train")
    first = register(client, train)
    again = register(client, train)
    assert (again.created, again.version) == (False, first.version)
    print(again.message)
    assert f"{NAME} version {first.version}" in again.message and "duplicate" in again.message
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1
