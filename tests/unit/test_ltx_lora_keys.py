"""diffusers <-> ComfyUI LoRA keys, checked against diffusers' own LTX-2 converter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import LTX2Pipeline
from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_ltx2_lora_to_diffusers

from ltx.loading import load_components
from ltx.lora import adapter_state_dict, add_lora
from ltx.lora_keys import from_comfyui, is_comfyui, to_comfyui
from ltx.tiny_build import save_tiny_model

TOP_LEVEL = [  # modules outside the blocks whose official names differ
    "proj_in",
    "audio_proj_in",
    "time_embed.linear",
    "audio_time_embed.emb.timestep_embedder.linear_1",
    "av_cross_attn_video_scale_shift.linear",
    "av_cross_attn_video_a2v_gate.linear",
    "av_cross_attn_audio_scale_shift.linear",
    "av_cross_attn_audio_v2a_gate.linear",
    "prompt_adaln.linear",
    "audio_prompt_adaln.linear",
    "caption_projection.linear_1",
    "proj_out",
]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    path = tmp_path_factory.mktemp("tiny") / "m"
    save_tiny_model(path, seed=0)
    transformer = load_components(path, ["transformer"])["transformer"]
    add_lora(transformer, rank=2, alpha=4, dropout=0.0, targets="all")
    sd = adapter_state_dict(transformer)
    g = torch.Generator().manual_seed(0)
    for i, module in enumerate(TOP_LEVEL):
        sd[f"transformer.{module}.lora_A.weight"] = torch.randn(2, 4 + i, generator=g)
        sd[f"transformer.{module}.lora_B.weight"] = torch.randn(4 + i, 2, generator=g)
    return sd


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_diffusers_converter_inverts_to_comfyui(adapter: dict[str, torch.Tensor]) -> None:
    comfy = to_comfyui(adapter)
    assert all(k.startswith("diffusion_model.") for k in comfy) and is_comfyui(comfy)
    _same(_convert_non_diffusers_ltx2_lora_to_diffusers(dict(comfy)), adapter)


def test_pipeline_lora_state_dict_reads_comfyui(adapter: dict[str, torch.Tensor]) -> None:
    without_alpha = {k: v for k, v in adapter.items() if not k.endswith(".alpha")}
    _same(LTX2Pipeline.lora_state_dict(to_comfyui(without_alpha)), without_alpha)


def test_round_trip_and_official_names(adapter: dict[str, torch.Tensor]) -> None:
    _same(from_comfyui(to_comfyui(adapter)), adapter)
    comfy = to_comfyui(adapter)
    assert "diffusion_model.patchify_proj.lora_A.weight" in comfy
    assert "diffusion_model.audio_patchify_proj.lora_A.weight" in comfy
    assert "diffusion_model.adaln_single.linear.lora_A.weight" in comfy
    assert "diffusion_model.av_ca_a2v_gate_adaln_single.linear.lora_B.weight" in comfy
    assert "diffusion_model.prompt_adaln_single.linear.lora_A.weight" in comfy
    assert "diffusion_model.transformer_blocks.0.audio_to_video_attn.to_q.alpha" in comfy
    assert "diffusion_model.transformer_blocks.1.ff.net.0.proj.lora_A.weight" in comfy


def test_connector_keys_and_diffusers_keys_pass_through() -> None:
    sd = {"connectors.text_proj_in.lora_A.weight": torch.ones(1)}
    comfy = to_comfyui(sd)
    assert list(comfy) == ["text_embedding_projection.aggregate_embed.lora_A.weight"]
    assert from_comfyui(comfy) == sd
    assert from_comfyui(sd) == sd and not is_comfyui(sd)
    with pytest.raises(KeyError, match="unet"):
        to_comfyui({"unet.x.lora_A.weight": torch.ones(1)})


def test_norm_names(tmp_path: Path) -> None:
    sd = {"transformer.transformer_blocks.0.attn1.norm_q.lora_A.weight": torch.ones(1)}
    comfy = to_comfyui(sd)
    assert list(comfy) == ["diffusion_model.transformer_blocks.0.attn1.q_norm.lora_A.weight"]
    assert _convert_non_diffusers_ltx2_lora_to_diffusers(comfy).keys() == sd.keys()
