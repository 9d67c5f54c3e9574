"""LoRA presets, injection and adapter state dicts that diffusers' pipeline loader accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx.loading import load_components, load_pipeline
from ltx.lora import (
    TARGETS,
    adapter_metadata,
    adapter_state_dict,
    add_lora,
    count_lora_parameters,
    diffusers_metadata_header,
    fold_alpha,
    load_adapter_file,
    target_modules,
)
from ltx.lora_keys import to_comfyui
from stagekit.errors import UserError


def _transformer(model_dir: Path) -> torch.nn.Module:
    return load_components(model_dir, ["transformer"])["transformer"]


def _inputs() -> dict:
    """One denoiser call on a 2x4x4 latent video, 5 audio latents and 16 text tokens."""
    g = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(1, 2 * 4 * 4, 8, generator=g),
        "audio_hidden_states": torch.randn(1, 5, 8, generator=g),
        "encoder_hidden_states": torch.randn(1, 16, 32, generator=g),
        "audio_encoder_hidden_states": torch.randn(1, 16, 32, generator=g),
        "timestep": torch.tensor([500.0]),
        "num_frames": 2,
        "height": 4,
        "width": 4,
        "audio_num_frames": 5,
        "fps": 24.0,
        "return_dict": False,
    }


def _forward(transformer: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return transformer(**_inputs())


def _randomize_lora(transformer: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_video_attention_targets_only_video_attention(model_dir: Path) -> None:
    names = target_modules(_transformer(model_dir), "video_attention")
    assert len(names) == 2 * 2 * 4  # layers x (attn1, attn2) x (q, k, v, out)
    assert all(".attn1." in n or ".attn2." in n for n in names)
    assert not any("audio" in n or "video_to" in n for n in names)
    assert "transformer_blocks.1.attn2.to_out.0" in names


def test_presets_nest_and_all_covers_every_block_linear(model_dir: Path) -> None:
    transformer = _transformer(model_dir)
    video = set(target_modules(transformer, "video_attention"))
    video_ff = set(target_modules(transformer, "video_attention_ff"))
    everything = set(target_modules(transformer, "all"))
    assert video < video_ff < everything
    assert video_ff - video == {
        f"transformer_blocks.{i}.ff.net.{m}" for i in (0, 1) for m in ("0.proj", "2")
    }
    block_linears = {
        n
        for n, m in transformer.named_modules()
        if isinstance(m, torch.nn.Linear) and n.startswith("transformer_blocks.")
    }
    assert everything == block_linears and len(everything) == 2 * (6 * 4 + 4)


def test_raw_regex_and_bad_targets(model_dir: Path) -> None:
    transformer = _transformer(model_dir)
    assert target_modules(transformer, r"transformer_blocks\.0\.attn1\.to_q") == [
        "transformer_blocks.0.attn1.to_q"
    ]
    with pytest.raises(UserError, match="valid regex"):
        add_lora(transformer, 4, 4, 0.0, "attn1[")
    with pytest.raises(UserError, match="match no Linear"):
        add_lora(transformer, 4, 4, 0.0, "nothing_here")
    assert set(TARGETS) == {"video_attention", "video_attention_ff", "audio", "all"}
    # `audio`: exactly the modules that write into the audio stream
    audio = {name.split(".")[2] for name in target_modules(transformer, "audio")}
    assert audio == {"audio_attn1", "audio_attn2", "audio_ff", "video_to_audio_attn"}


def test_add_lora_starts_equal_to_base_and_counts_params(model_dir: Path) -> None:
    transformer = _transformer(model_dir)
    base = _forward(transformer)
    add_lora(transformer, rank=4, alpha=4, dropout=0.0, targets="video_attention")
    adapted = _forward(transformer)
    assert all(torch.equal(a, b) for a, b in zip(base, adapted, strict=True))
    # each of the 16 video projections is 16 -> 16: A [4, 16] + B [16, 4]
    assert count_lora_parameters(transformer) == 16 * (4 * 16 + 16 * 4)
    trainable = {n for n, p in transformer.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert adapter_metadata(transformer)["rank"] == 4


def test_state_dict_layout_and_alpha_keys(model_dir: Path) -> None:
    transformer = _transformer(model_dir)
    add_lora(transformer, rank=4, alpha=8, dropout=0.0, targets="video_attention")
    sd = adapter_state_dict(transformer)
    a_keys = [k for k in sd if k.endswith(".lora_A.weight")]
    assert len(a_keys) == 16 and all(k.startswith("transformer.transformer_blocks.") for k in sd)
    assert sd["transformer.transformer_blocks.0.attn1.to_q.lora_A.weight"].shape == (4, 16)
    assert sd["transformer.transformer_blocks.0.attn1.to_q.lora_B.weight"].shape == (16, 4)
    assert sd["transformer.transformer_blocks.0.attn1.to_q.alpha"].item() == 8.0
    assert len([k for k in sd if k.endswith(".alpha")]) == 16

    same = _transformer(model_dir)
    add_lora(same, rank=4, alpha=4, dropout=0.0, targets="video_attention")
    assert not any(k.endswith(".alpha") for k in adapter_state_dict(same))


def test_alpha_equal_rank_file_loads_directly_and_reproduces(
    model_dir: Path, tmp_path: Path
) -> None:
    transformer = _transformer(model_dir)
    add_lora(transformer, rank=4, alpha=4, dropout=0.0, targets="all")
    _randomize_lora(transformer)
    expected = _forward(transformer)
    save_file(adapter_state_dict(transformer), str(tmp_path / "a.safetensors"))

    pipe = load_pipeline(model_dir)
    base = _forward(pipe.transformer)
    pipe.load_lora_weights(str(tmp_path / "a.safetensors"))
    got = _forward(pipe.transformer)
    for e, g, b in zip(expected, got, base, strict=True):
        assert not torch.allclose(e, b, atol=1e-3)  # the adapter matters
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_alpha_keys_fold_into_what_diffusers_loads(model_dir: Path, tmp_path: Path) -> None:
    transformer = _transformer(model_dir)
    add_lora(transformer, rank=4, alpha=2, dropout=0.0, targets="video_attention_ff")
    _randomize_lora(transformer)
    expected = _forward(transformer)
    sd = adapter_state_dict(transformer)

    pipe = load_pipeline(model_dir)
    with pytest.raises(ValueError, match="lora"):  # diffusers 0.42.1 refuses `.alpha` keys
        pipe.load_lora_weights(dict(sd))
    pipe.load_lora_weights(fold_alpha(sd))
    for e, g in zip(expected, _forward(pipe.transformer), strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_metadata_header_carries_alpha_for_plain_diffusers(model_dir: Path, tmp_path: Path) -> None:
    transformer = _transformer(model_dir)
    add_lora(transformer, rank=4, alpha=12, dropout=0.0, targets="video_attention")
    _randomize_lora(transformer)
    expected = _forward(transformer)
    weights = {k: v for k, v in adapter_state_dict(transformer).items() if not k.endswith(".alpha")}
    path = tmp_path / "with_header.safetensors"
    save_file(weights, str(path), metadata=diffusers_metadata_header(transformer))

    pipe = load_pipeline(model_dir)
    pipe.load_lora_weights(str(path))
    assert pipe.transformer.peft_config["default_0"].lora_alpha == 12
    for e, g in zip(expected, _forward(pipe.transformer), strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    # our reader honours the header too (it has to fold alpha itself)
    pipe = load_pipeline(model_dir)
    pipe.load_lora_weights(load_adapter_file(path))
    for e, g in zip(expected, _forward(pipe.transformer), strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_load_adapter_file_reads_comfyui_with_alpha(model_dir: Path, tmp_path: Path) -> None:
    transformer = _transformer(model_dir)
    add_lora(transformer, rank=2, alpha=6, dropout=0.0, targets="all")
    _randomize_lora(transformer)
    expected = _forward(transformer)
    save_file(to_comfyui(adapter_state_dict(transformer)), str(tmp_path / "comfy.safetensors"))

    pipe = load_pipeline(model_dir)
    pipe.load_lora_weights(load_adapter_file(tmp_path / "comfy.safetensors"))
    for e, g in zip(expected, _forward(pipe.transformer), strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_fold_alpha_needs_its_lora_pair() -> None:
    with pytest.raises(UserError, match=r"no transformer\.x\.lora_A\.weight"):
        fold_alpha({"transformer.x.alpha": torch.tensor(4.0)})
    with pytest.raises(UserError, match="not found"):
        load_adapter_file(Path("/nonexistent/adapter.safetensors"))
