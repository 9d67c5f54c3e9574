"""The cache's compact text layout: only the attended tokens are stored, and re-padding gives
back exactly the tensors `encode_prompts` made, whatever the padded positions held."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.cache import compact_text, left_padding_mask, text_inputs


def padded(tokens: int, length: int, dims: dict[str, int], seed: int = 0) -> dict:
    """`encode_prompts`-like output for one prompt: padded rows all equal a (bias) row."""
    g = torch.Generator().manual_seed(seed)
    out = {"prompt_attention_mask": left_padding_mask(tokens, length)}
    for name, dim in dims.items():
        value = torch.randn(1, length, dim, generator=g)
        value[:, : length - tokens] = torch.randn(dim, generator=g)
        out[name] = value
    return out


LTX_2_0 = {"prompt_features": 32}
LTX_2_3 = {"prompt_features": 32, "audio_prompt_features": 16}


@pytest.mark.parametrize("dims", [LTX_2_0, LTX_2_3])
@pytest.mark.parametrize("tokens", [1, 11, 128])
def test_compact_text_repads_bit_for_bit(dims: dict, tokens: int) -> None:
    text = padded(tokens, 128, dims)
    stored = compact_text(text)
    assert all(stored[f"text.{k}"].shape == (1, tokens, d) for k, d in dims.items())
    assert "text.prompt_attention_mask" not in stored and int(stored["text_length"]) == 128
    back = text_inputs(stored)
    assert back.keys() == text.keys()
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in text.items())


def test_the_padded_layout_of_cache_format_2_reads_as_it_was() -> None:
    text = padded(5, 64, LTX_2_3)
    legacy = {f"text.{k}": v for k, v in text.items()} | {"video": torch.zeros(1)}
    back = text_inputs(legacy)
    assert back.keys() == text.keys() and all(torch.equal(back[k], v) for k, v in text.items())


def test_what_a_row_cannot_rebuild_is_refused() -> None:
    text = padded(5, 64, LTX_2_0)
    text["prompt_features"][:, 0] += 1  # padded positions that differ
    with pytest.raises(ValueError, match="padded positions differ"):
        compact_text(text)
    right = padded(5, 64, LTX_2_0)
    right["prompt_attention_mask"] = right["prompt_attention_mask"].flip(-1)  # right padding
    with pytest.raises(ValueError, match="left-padded"):
        compact_text(right)


def test_without_registers_the_padding_is_seen_and_kept_exactly(model_dir: Path) -> None:
    """Connectors with learnable registers replace padded tokens, so zeros would do; without
    registers diffusers attends to them (its binary mask is all ones), and with a projection
    bias they hold that bias, not zeros. The stored pad row keeps even that exact."""
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    from ltx.encode import encode_prompts
    from ltx.forward import predict_velocity
    from ltx.loading import load_components

    parts = load_components(model_dir, ["text_encoder", "tokenizer", "connectors", "transformer"])
    cfg = {k: v for k, v in parts["connectors"].config.items() if not k.startswith("_")}
    cfg.update(
        video_connector_num_learnable_registers=None,
        audio_connector_num_learnable_registers=None,
        proj_bias=True,
    )
    torch.manual_seed(0)
    parts["connectors"] = LTX2TextConnectors(**cfg).eval()
    with torch.no_grad():
        parts["connectors"].text_proj_in.bias.normal_()
    text = encode_prompts(parts, ["a red cat walks"])
    pad = text["prompt_attention_mask"] == 0
    bias = parts["connectors"].text_proj_in.bias
    assert torch.equal(text["prompt_features"][pad], bias.expand(int(pad.sum()), -1))

    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(1, 8, 3, 8, 8, generator=g), torch.randn(1, 2, 10, 4, generator=g)
    sigmas = torch.tensor([0.4]), torch.tensor([0.7])

    def velocity(t: dict) -> tuple:
        return predict_velocity(parts, video, audio, t, *sigmas, fps=24.0)

    zeros = text | {"prompt_features": text["prompt_features"].masked_fill(pad[..., None], 0)}
    assert not torch.equal(velocity(zeros)[0], velocity(text)[0])
    exact = text_inputs(compact_text(text))
    assert all(torch.equal(a, b) for a, b in zip(velocity(exact), velocity(text), strict=True))
