"""LTX-2.5's keyframe marker: training marks exactly the tokens our renders mark, which are the
tokens Lightricks' reference inference marks (ltx-core HEAD `tools.py` L158-196: the first
latent frame, unconditionally; appended conditioning tokens unmarked)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ltx.forward import predict_velocity
from ltx.tiny_build import build_tiny_components, build_tiny_pipeline

F, H, W = 3, 2, 2  # latent frames x height x width: 12 tokens, 4 of them in frame 0


def _text(connectors: Any) -> dict:
    from ltx.encode import project_text

    c = connectors.config
    gen = torch.Generator().manual_seed(0)
    stacked = torch.randn(1, 128, c.caption_channels * c.text_proj_in_factor, generator=gen)
    mask = torch.zeros(1, 128, dtype=torch.int64)
    mask[:, -6:] = 1
    return project_text(connectors, stacked, mask)


def _capture(transformer: Any) -> tuple[list, Any]:
    seen: list = []

    def hook(module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        seen.append(kwargs.get("video_keyframes_mask"))  # as the forward received it

    return seen, transformer.register_forward_hook(hook, with_kwargs=True)


def _training_masks(version: str) -> list:
    """The masks one training forward (`predict_velocity`) hands the transformer."""
    parts = build_tiny_components(0, version=version)
    seen, handle = _capture(parts["transformer"])
    video = torch.randn(1, parts["transformer"].config.in_channels, F, H, W)
    sigma = torch.tensor([0.5])
    with torch.no_grad():
        predict_velocity(parts, video, None, _text(parts["connectors"]), sigma, sigma, fps=24.0)
    handle.remove()
    return seen


def test_training_marks_the_first_latent_frame_only() -> None:
    seen = _training_masks("2.5")
    expected = torch.zeros(1, F * H * W, 1)
    expected[:, : H * W] = 1
    assert torch.equal(seen[0], expected)


def test_renders_mark_the_same_tokens_and_the_marker_changes_the_output() -> None:
    from ltx.sampling import generate

    pipe = build_tiny_pipeline(0, version="2.5")
    seen, handle = _capture(pipe.transformer)
    kwargs = dict(width=64, height=64, frames=9, fps=24.0, steps=2, guidance_scale=1.0)
    marked = generate(pipe, ["a red cat"], [0], **kwargs)[0].video
    handle.remove()
    # 64x64x9 -> latents 5 x 8 x 8 (tiny VAE: x8 space, x2 time): frame 0 = 64 tokens
    expected = torch.zeros(1, 5 * 8 * 8, 1)
    expected[:, :64] = 1
    assert seen and all(torch.equal(m, expected) for m in seen)
    with torch.no_grad():
        pipe.transformer.keyframes_abs_pos_embedding.zero_()
    unmarked = generate(pipe, ["a red cat"], [0], **kwargs)[0].video
    assert not (marked == unmarked).all()  # the (non-zero) marker reaches the pixels


@pytest.mark.parametrize("version", ["2.0", "2.3"])
def test_bases_without_the_marker_get_no_mask(version: str) -> None:
    assert _training_masks(version) == [None]


@pytest.mark.parametrize("preset", ["video_attention", "video_attention_ff", "all"])
def test_no_target_preset_reaches_the_attention_gates(preset: str) -> None:
    """2.3+ attention has a per-head gate Linear (`to_gate_logits`): presets leave it frozen."""
    from ltx.lora import target_modules

    transformer = build_tiny_components(0, version="2.3")["transformer"]
    gates = [n for n, _ in transformer.named_modules() if n.endswith("to_gate_logits")]
    chosen = target_modules(transformer, preset)
    assert gates and chosen
    assert not any(n.endswith("to_gate_logits") for n in chosen)
    assert any(n.endswith("attn1.to_q") for n in chosen)
