"""DoRA and LoKr adapters: injection, metadata, and ComfyUI layouts whose merged weights
reproduce what PEFT computes (full and decomposed LoKr factors)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ltx.loading import load_components
from ltx.lora import (
    adapter_kind,
    adapter_metadata,
    add_lora,
    count_lora_parameters,
)
from stagekit.errors import UserError
from tests.unit.test_ltx_lora import _forward, _randomize_lora


def _adapted(model_dir: Path, kind: str, rank: int = 4, alpha: float = 8.0) -> torch.nn.Module:
    transformer = load_components(model_dir, ["transformer"])["transformer"]
    add_lora(transformer, rank, alpha, 0.0, "video_attention", kind=kind)
    return transformer.eval()


def _randomize(transformer: torch.nn.Module) -> None:
    _randomize_lora(transformer)  # lora_* parameters
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lokr_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("kind", ["dora", "lokr"])
def test_kinds_start_equal_to_the_base_and_report_themselves(model_dir, kind) -> None:
    base = _forward(load_components(model_dir, ["transformer"])["transformer"])
    transformer = _adapted(model_dir, kind)
    assert adapter_kind(transformer) == kind
    meta = adapter_metadata(transformer)
    assert (meta["kind"], meta["rank"], meta["alpha"]) == (kind, 4, 8.0)
    assert count_lora_parameters(transformer) > 0
    assert torch.allclose(_forward(transformer)[0], base[0], atol=1e-6)


def test_unknown_kind_is_a_user_error(model_dir) -> None:
    transformer = load_components(model_dir, ["transformer"])["transformer"]
    with pytest.raises(UserError, match="lora kind 'loha'"):
        add_lora(transformer, 4, 4, 0.0, "video_attention", kind="loha")


@pytest.mark.parametrize(
    ("kind", "rank"), [("dora", 4), ("lokr", 4), ("lokr", 1)]
)  # lokr rank 1: w2 decomposed into w2_a @ w2_b (an `alpha` key); rank 4: full w2 (folded)
def test_comfyui_layout_merges_to_what_peft_computes(model_dir, kind, rank) -> None:
    """By ComfyUI's arithmetic (ltx.comfyui_math); every cell: test_exports_consumers.py."""
    from ltx.consumer_files import consumer_state
    from trainer.export import comfyui_merged

    transformer = _adapted(model_dir, kind, rank=rank)
    _randomize(transformer)
    expected = _forward(transformer)[0]
    comfy = consumer_state(transformer, "comfyui")
    assert all(k.startswith("diffusion_model.") for k in comfy)
    if kind == "lokr":
        decomposed = any(k.endswith("lokr_w2_a") for k in comfy)
        assert decomposed == (rank == 1)
        assert any(k.endswith(".alpha") for k in comfy) == decomposed
    base = load_components(model_dir, ["transformer"])["transformer"].eval()
    before = _forward(base)[0]
    with comfyui_merged(base, comfy):
        merged = _forward(base)[0]
    assert torch.allclose(merged, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(merged, before, atol=1e-4)
    assert torch.equal(_forward(base)[0], before)  # weights restored after the check


@pytest.mark.parametrize(("kind", "rank"), [("dora", 4), ("lokr", 4), ("lokr", 1)])
def test_every_exported_file_loads_through_diffusers_with_load_adapter_file(
    model_dir, tmp_path, kind, rank
) -> None:
    """What evaluation and `ltx.sampling.generate(adapter=…)` do: `load_adapter_file` →
    `pipe.load_lora_weights`. LoKr arrives as its exactly equal LoRA; a ComfyUI DoRA, whose
    `dora_scale` follows ComfyUI's normalisation, is refused with the file to use instead."""
    from ltx.loading import load_pipeline
    from ltx.lora import load_adapter_file
    from trainer.export import export_adapter

    transformer = _adapted(model_dir, kind, rank=rank)
    _randomize(transformer)
    expected = _forward(transformer)[0]
    files = export_adapter(transformer, tmp_path, {"run_id": "x"})
    pipe = load_pipeline(model_dir)
    for f in files:
        if kind == "dora" and f.name == "comfyui.safetensors":
            with pytest.raises(UserError, match="load the diffusers export"):
                load_adapter_file(f)
            continue
        sd = load_adapter_file(f)
        if kind == "lokr":
            assert all(".lora_A." in k or ".lora_B." in k for k in sd)
        pipe.load_lora_weights(sd, adapter_name="check")
        try:
            got = _forward(pipe.transformer)[0]
        finally:
            pipe.unload_lora_weights()
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5), f.name
