"""Training on the cached sample: deterministic, exported in both layouts, loadable, skippable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.integration.conftest import TINY
from tests.integration.train_job import LINEAGE
from trainer.config import LoraConfig, TrainerConfig
from trainer.train import train

STEPS = 6


def run_train(cache_dir: Path, out: Path, model_path: Path, **trainer) -> dict:
    cfg = TrainerConfig(max_steps=STEPS, log_every=2, warmup_steps=1, **trainer)
    return train(
        cache_dir,
        out,
        model_path,
        TINY,
        LoraConfig(rank=4, alpha=8),
        cfg,
        seed=0,
        trigger="zorblat",
        lineage=LINEAGE,
        resolved_config={"seed": 0},
    )


@pytest.fixture(scope="module")
def trained(cache_dir, model_path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "train"
    run_train(cache_dir, out, model_path)
    return out


def test_losses_are_logged_and_finite(trained: Path) -> None:
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert all(0 < r["loss"] < 100 for r in rows)
    summary = json.loads((trained / "train.json").read_text())
    assert summary["lineage"] == LINEAGE
    assert summary["final"]["val_loss"] > 0  # the sample has a validation split
    assert summary["params"]["rank"] == 4


def test_same_seed_gives_the_same_adapter(trained, cache_dir, model_path, tmp_path) -> None:
    again = tmp_path / "again"
    run_train(cache_dir, again, model_path)
    assert (again / "adapter/adapter.safetensors").read_bytes() == (
        trained / "adapter/adapter.safetensors"
    ).read_bytes()
    assert (again / "metrics.jsonl").read_text() == (trained / "metrics.jsonl").read_text()


def test_both_layouts_hold_the_same_trained_weights(trained: Path) -> None:
    from ltx.lora import fold_alpha, load_adapter_file
    from ltx.lora_keys import from_comfyui

    diffusers = load_file(trained / "adapter/adapter.safetensors")
    comfy = load_file(trained / "adapter/comfyui.safetensors")
    assert all(k.startswith("transformer.") for k in diffusers)
    assert all(k.startswith("diffusion_model.") for k in comfy)
    # alpha 8 ≠ rank 4: ComfyUI carries .alpha keys; diffusers (which rejects them) has
    # alpha / rank folded into lora_B (docs/exports.md)
    assert not any(k.endswith(".alpha") for k in diffusers)
    restored = from_comfyui(comfy)
    alphas = {k: v for k, v in restored.items() if k.endswith(".alpha")}
    assert alphas and all(v.item() == 8.0 for v in alphas.values())
    assert {k: v for k, v in restored.items() if k not in alphas}.keys() == diffusers.keys()
    folded = fold_alpha(restored)
    assert all(torch.allclose(folded[k], v, rtol=1e-6, atol=0) for k, v in diffusers.items())
    a, b = (
        load_adapter_file(trained / "adapter" / f)
        for f in ("adapter.safetensors", "comfyui.safetensors")
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    b_norm = sum(v.abs().sum().item() for k, v in diffusers.items() if "lora_B" in k)
    assert b_norm > 0  # lora_B starts at zero: training moved it


def test_metadata_header_names_lineage_and_settings(trained: Path) -> None:
    for name in ("adapter.safetensors", "comfyui.safetensors"):
        with safe_open(trained / "adapter" / name, "pt") as f:
            meta = f.metadata()
        assert meta["base_model_hash"] == "b" * 64 and meta["dataset_hash"] == "d" * 64
        assert (meta["rank"], meta["alpha"], meta["trigger"]) == ("4", "8.0", "zorblat")
        assert meta["format"] in {"diffusers", "comfyui"}
        assert meta["consumer"] in {"diffusers", "comfyui"} and meta["verified_by"]


def test_exported_adapter_changes_what_the_pipeline_renders(trained, model_path) -> None:
    from ltx.loading import load_pipeline
    from ltx.sampling import generate

    pipe = load_pipeline(model_path)
    args = dict(width=64, height=64, frames=9, fps=24.0, steps=2, guidance_scale=1.0)
    base = generate(pipe, ["zorblat mascot"], [0], **args)[0]
    tuned = generate(
        pipe, ["zorblat mascot"], [0], adapter=trained / "adapter/adapter.safetensors", **args
    )[0]
    again = generate(pipe, ["zorblat mascot"], [0], **args)[0]
    assert (base.video != tuned.video).any()
    assert (base.video == again.video).all()  # the adapter was unloaded


def test_rerun_skips_and_a_changed_setting_retrains(trained, cache_dir, model_path) -> None:
    before = (trained / "stage.json").stat().st_mtime_ns
    assert run_train(cache_dir, trained, model_path)["skipped"]
    assert (trained / "stage.json").stat().st_mtime_ns == before
    assert not run_train(cache_dir, trained, model_path, lr=5e-4)["skipped"]
