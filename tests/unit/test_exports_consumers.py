"""Every adapter kind × consumer cell of ltx.exports.TABLE, checked with the consumer's own code.

- diffusers: the real `LTX2Pipeline.load_lora_weights(path)` then `fuse_lora()` (diffusers 0.42.1).
- ltx-pipelines: the real `ltx_core.loader.fuse_loras.apply_loras` (ltx-core 1.0.0, `make setup`)
  on a bf16 model state dict with official keys, as `SingleGPUModelBuilder.build` calls it.
- ComfyUI (does not install here): `ltx.comfyui_math`, written from its code (files and lines
  cited there).
Each is compared with PEFT's own merge (`LoraLayer.merge`, PEFT 0.21.2) of the trained adapter,
weights and a tiny-model forward, max relative difference printed and bounded. The base weights
are rounded to bf16 values first so ltx-core (which takes bf16 weights only) sees the same base.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ltx.consumer_files import ExportRefused, consumer_state
from ltx.exports import CONSUMERS, KINDS, TABLE, file_name, outcome
from ltx.loading import load_components, load_pipeline
from ltx.lora import add_lora
from ltx.lora_keys import official_module
from tests.unit.test_ltx_lora import _forward
from trainer.export import comfyui_merged, export_adapter

pytest.importorskip("ltx_core", reason="ltx-core is installed by `make setup` (--no-deps)")

RANK = {"lora": 4, "dora": 4, "lokr": 1}  # LoKr rank 1: w2 decomposed, equal LoRA small enough
ALPHA = 8.0  # ≠ rank: every consumer must get alpha / rank right
WEIGHT_BOUND, FORWARD_BOUND = 1e-5, 1e-4  # fp32 round-off, relative to the largest value


def _round_bf16(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.bfloat16().float())


def _trained(model_dir: Path, kind: str, rank: int | None = None) -> torch.nn.Module:
    transformer = load_components(model_dir, ["transformer"])["transformer"]
    _round_bf16(transformer)
    add_lora(transformer, rank or RANK[kind], ALPHA, 0.0, "video_attention", kind=kind)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_magnitude" in name:  # DoRA's m: near the base row norms, not equal
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif "lora_" in name or "lokr_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return transformer.eval()


def _peft_merged(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """{module: weight} after PEFT's own merge of each adapted layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    copied = copy.deepcopy(transformer)
    out = {}
    for name, module in copied.named_modules():
        if isinstance(module, BaseTunerLayer):
            module.merge(safe_merge=True)
            out[name] = module.get_base_layer().weight.detach().clone()
    return out


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


def _max_rel(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    assert set(got) == set(ref)
    return max(_rel(got[k].float(), ref[k].float()) for k in ref)


def _base(model_dir: Path) -> torch.nn.Module:
    base = load_components(model_dir, ["transformer"])["transformer"]
    _round_bf16(base)
    return base.eval()


def _with_weights(base: torch.nn.Module, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        for name, w in weights.items():
            base.get_submodule(name).weight.copy_(w)
    return _forward(base)[0]


def _diffusers(model_dir: Path, path: Path, names: list[str]) -> tuple[dict, torch.Tensor]:
    pipe = load_pipeline(model_dir)
    _round_bf16(pipe.transformer)
    # an API that reads the tensors but not the header gets the same (alpha is in lora_B)
    pipe.load_lora_weights(load_file(str(path)), adapter_name="tensors-only")
    headerless = _forward(pipe.transformer)[0]
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(path), adapter_name="check")
    forward = _forward(pipe.transformer)[0]
    assert _rel(headerless, forward) < FORWARD_BOUND
    pipe.fuse_lora(components=["transformer"], lora_scale=1.0)
    merged = {n: pipe.transformer.get_submodule(n).get_base_layer().weight.clone() for n in names}
    return merged, forward


def _ltx_pipelines(model_dir: Path, path: Path, names: list[str], dtype) -> dict:
    from ltx.ltx_core_fuse import fuse

    base = _base(model_dir)
    model_sd = {official_module(n) + ".weight": base.get_submodule(n).weight for n in names}
    model_sd = {k: v.detach().bfloat16() for k, v in model_sd.items()}
    fused = fuse(model_sd, load_file(str(path)), dtype=dtype)
    return {n: fused[official_module(n) + ".weight"].float() for n in names}


def _comfyui(model_dir: Path, path: Path, names: list[str]) -> tuple[dict, torch.Tensor]:
    base = _base(model_dir)
    with comfyui_merged(base, load_file(str(path))):
        merged = {n: base.get_submodule(n).weight.detach().clone() for n in names}
        forward = _forward(base)[0]
    return merged, forward


CELLS = [(k, c) for k in KINDS for c in CONSUMERS]


@pytest.mark.parametrize(("kind", "consumer"), CELLS)
def test_each_cell_is_exact_in_its_consumer_or_refused(model_dir, tmp_path, kind, consumer):
    transformer = _trained(model_dir, kind)
    expected_forward = _forward(transformer)[0]
    merged = _peft_merged(transformer)
    files = export_adapter(transformer, tmp_path, {"base_model": "tiny"})
    record = json.loads((tmp_path / "exports.json").read_text())["consumers"][consumer]
    path = tmp_path / file_name(consumer)
    cell = outcome(kind, consumer)
    if cell.result == "refused":
        assert not path.exists() and record["outcome"] == "refused"
        with pytest.raises(ExportRefused, match=f"no {consumer} file for a {kind} adapter") as e:
            consumer_state(transformer, consumer)
        assert "instead:" in str(e.value) and record["reason"] == str(e.value)
        print(f"{kind} × {consumer}: refused — {e.value}")
        return
    assert path in files and record["outcome"] == cell.result
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    assert (header["consumer"], header["adapter_kind"]) == (consumer, kind)
    names = sorted(merged)
    if consumer == "diffusers":
        got, forward = _diffusers(model_dir, path, names)
    elif consumer == "comfyui":
        got, forward = _comfyui(model_dir, path, names)
    else:
        got = _ltx_pipelines(model_dir, path, names, torch.float32)
        forward = _with_weights(_base(model_dir), got)
        bf16 = _max_rel(_ltx_pipelines(model_dir, path, names, None), merged)
        print(f"{kind} × ltx-pipelines at its default bf16 fusion: weights {bf16:.2e}")
        assert bf16 < 2**-7  # bf16 round-off of the fused weight, no more
    weights_rel, forward_rel = _max_rel(got, merged), _rel(forward, expected_forward)
    print(f"{kind} × {consumer}: {cell.result}, weights {weights_rel:.2e}, fwd {forward_rel:.2e}")
    assert weights_rel < WEIGHT_BOUND and forward_rel < FORWARD_BOUND


def test_the_table_has_every_cell_and_a_reason_for_each_refusal():
    assert set(TABLE) == {(k, c) for k in KINDS for c in CONSUMERS}
    for cell in TABLE.values():
        assert cell.how and (cell.result != "refused" or cell.instead)


def test_a_lokr_whose_equal_lora_is_larger_than_its_update_is_refused_not_bloated(
    model_dir, tmp_path
):
    """Rank 4 on the tiny 32-wide layers: w2 stays whole, the equal LoRA has full rank."""
    transformer = _trained(model_dir, "lokr", rank=4)
    files = export_adapter(transformer, tmp_path, {"base_model": "tiny"})
    record = json.loads((tmp_path / "exports.json").read_text())["consumers"]
    for consumer in ("diffusers", "ltx-pipelines"):
        assert record[consumer]["outcome"] == "refused"
        assert "more than the" in record[consumer]["reason"]
    assert not (tmp_path / "ltx-pipelines.safetensors").exists()
    with safe_open(str(files[0]), "pt") as f:  # the PEFT LoKr: the registry's identity
        assert (files[0].name, f.metadata()["format"]) == ("adapter.safetensors", "peft")
    assert record["comfyui"]["outcome"] == "converted"


def test_comfyui_dora_with_peft_magnitude_is_wrong_by_comfyuis_arithmetic(model_dir):
    """Why the DoRA magnitude is rewritten: PEFT's m as `dora_scale` is off in ComfyUI."""
    from ltx.lora import adapter_state_dict, comfyui_adapter

    transformer = _trained(model_dir, "dora")
    merged = _peft_merged(transformer)
    naive = comfyui_adapter(adapter_state_dict(transformer), "dora", ALPHA, 4)
    base = _base(model_dir)
    with comfyui_merged(base, naive):
        got = {n: base.get_submodule(n).weight.detach().clone() for n in merged}
    wrong = _max_rel(got, merged)
    print(f"PEFT magnitude written as dora_scale, in ComfyUI: weights off by {wrong:.2%}")
    assert wrong > 1e-3


def test_consumer_files_are_the_same_bytes_for_the_same_weights(model_dir, tmp_path):
    transformer = _trained(model_dir, "dora")
    first = export_adapter(transformer, tmp_path / "a", {"base_model": "tiny"})
    second = export_adapter(transformer, tmp_path / "b", {"base_model": "tiny"})
    assert [f.read_bytes() for f in first] == [f.read_bytes() for f in second]


def test_docs_table_is_the_codes_table():
    """docs/exports.md carries ltx.exports.TABLE as generated (`python -m ltx.exports`)."""
    from ltx.exports import DOCS_END, DOCS_START, markdown_table

    docs = (Path(__file__).resolve().parents[2] / "docs" / "exports.md").read_text()
    assert f"{DOCS_START}\n{markdown_table()}{DOCS_END}" in docs


def test_an_unfolded_alpha_shows_in_ltx_cores_fusion(model_dir, tmp_path):
    """The check can fail: the ltx-pipelines file with lora_B not scaled by alpha / rank (what
    ltx-core silently did to earlier exports) is off, by ltx-core's own fusion."""
    from trainer.export import ltx_core_fused

    transformer = _trained(model_dir, "lora")
    expected = _forward(transformer)[0]
    export_adapter(transformer, tmp_path, {"base_model": "tiny"})
    sd = load_file(str(tmp_path / "ltx-pipelines.safetensors"))
    base = _base(model_dir)
    with ltx_core_fused(base, sd):
        assert _rel(_forward(base)[0], expected) < FORWARD_BOUND
    unfolded = {k: v / (ALPHA / RANK["lora"]) if ".lora_B." in k else v for k, v in sd.items()}
    with ltx_core_fused(base, unfolded):
        off = _rel(_forward(base)[0], expected)
    print(f"alpha left unfolded for ltx-core: forward off by {off:.2%}")
    assert off > 1e-2
