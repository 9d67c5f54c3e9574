"""Preprocessing within the GPU budget (trainer.plan_preprocess, trainer.text_encoder) on CPU.

- Each phase's traced peak (one prompt through Gemma and the connectors; one clip through the
  VAE, tiled or not) equals the eager peak of the same calls on the tiny model, byte for byte.
- The text encoder's bytes per format, as the plan counts them, equal what the quantised
  load stores (transformers' own quanto / bitsandbytes placement of the tiny Gemma).
- The quantised text encoder's features stay within a stated error of the float ones.
- Full size: Gemma 3 12B as ltx-core configures it, its bytes per format on meta; the 2.0
  preprocessing fits a 24 GB card only with the text encoder quantised, and the stage refuses
  the unquantised config before loading, naming the setting.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ltx.config import ModelConfig
from ltx.encode import encode_prompts, project_text
from ltx.fullsize import GEMMA3_FOR_LTX
from ltx.loading import load_components
from ltx.versions import VERSIONS
from stagekit.errors import UserError
from trainer import plan_preprocess as pre
from trainer.config import PreprocessConfig
from trainer.plan_report import Card
from trainer.plan_sizes import quantized_bytes
from trainer.plan_trace import LiveStorages
from trainer.quantize import module_kind, stored_bytes
from trainer.text_encoder import load_text_parts, quantized_layers

GIB = 1 << 30
TINY = ModelConfig(name="tiny", source="tiny")


def tiny_shape(model_dir: Path, **changes) -> pre.PreprocessShape:
    shape = pre.make_shape(TINY, PreprocessConfig(), model_dir, (9, 64, 96), 24.0, 32)
    return replace(shape, **changes)


@pytest.fixture(scope="module", autouse=True)
def warm_up(model_dir: Path) -> None:
    """The first traced call in a process allocates a few bytes once: make it before comparing."""
    pre.text_peak(tiny_shape(model_dir))


def eager_text(model_dir: Path, tokens: int) -> int:
    parts = load_components(model_dir, ["text_encoder", "connectors"])
    counter = LiveStorages()
    with torch.no_grad():
        ids = torch.zeros(1, tokens, dtype=torch.long)
        mask = torch.ones(1, tokens, dtype=torch.long)
        with counter:  # as ltx.encode.gemma_prompt_embeds and project_text
            out = parts["text_encoder"](
                input_ids=ids, attention_mask=mask, output_hidden_states=True
            )
            embeds = torch.stack(out.hidden_states, dim=-1).flatten(2, 3)
            del out
            project_text(parts["connectors"], embeds, mask)
    return counter.peak


def eager_video(model_dir: Path, clip: tuple[int, int, int], tiling: bool) -> int:
    vae = load_components(model_dir, ["vae"])["vae"]
    if tiling:
        vae.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32)
    counter = LiveStorages()
    with torch.no_grad(), counter:
        pixels = torch.empty(1, 3, *clip)
        vae.encode(pixels).latent_dist.mode()
    return counter.peak


def test_text_phase_traced_equals_eager(model_dir: Path) -> None:
    shape = tiny_shape(model_dir)
    assert pre.text_peak(shape) == eager_text(model_dir, 32)


def test_video_phase_traced_equals_eager(model_dir: Path) -> None:
    shape = tiny_shape(model_dir)
    assert pre.video_peak(replace(shape, audio_vae=None)) == eager_video(
        model_dir, (9, 64, 96), False
    )


def test_gemma_depth_extrapolation_equals_the_full_trace(model_dir: Path) -> None:
    """A 9-layer Gemma: the extrapolation from 2, 3, 4 traced layers is its full trace."""
    deep = pre._with_text_layers(tiny_shape(model_dir), 9)
    assert pre._text_layers(deep.text_encoder) == 9
    assert pre.encoder_peak(deep) == pre._trace_encoder(deep)


@pytest.mark.parametrize("fmt", ["int8", "nf4"])
def test_text_encoder_bytes_per_format_equal_the_quantised_load(model_dir: Path, fmt: str) -> None:
    """The plan's bytes for the quantised Linear layers equal what transformers' quantised
    load stores (weights with their scales), and the rest stays as loaded."""
    parts = load_text_parts(model_dir, TINY, "cpu", fmt)
    encoder = parts["text_encoder"]
    layers = quantized_layers(encoder)
    shape = replace(tiny_shape(model_dir), text_quantize=fmt)
    stored = sum(stored_bytes(m.weight) for m in encoder.modules() if module_kind(m) == fmt)
    facts = pre._linear_facts(pre._text_encoder(shape))
    planned = facts["stored"][fmt]
    # bitsandbytes leaves the vision tower's attention out-projection (a
    # NonDynamicallyQuantizableLinear) in float: one layer fewer than the plan replaces
    vision_out = encoder.get_submodule("model.vision_tower.head.attention.out_proj")
    if fmt == "nf4":
        assert layers == {"nf4": facts["count"] - 1}
        n, rows = vision_out.weight.numel(), vision_out.weight.shape[0]
        planned -= quantized_bytes(n, rows, 1, fmt, 4)
    else:
        assert layers == {"int8": facts["count"]}
    assert stored == planned


@pytest.mark.parametrize(("fmt", "bound"), [("int8", 0.025), ("nf4", 0.40)])
def test_quantised_text_features_stay_close(model_dir: Path, fmt: str, bound: float) -> None:
    """Relative L2 error of the cached text features (measured 1.3 % int8, 33 % nf4 on the
    tiny random Gemma: 4-bit is the last resort; docs/training.md)."""
    prompts = ["a red fox jumps over a log", "zorblat the mascot waves", ""]
    ref = encode_prompts(load_text_parts(model_dir, TINY, "cpu"), prompts)
    got = encode_prompts(load_text_parts(model_dir, TINY, "cpu", fmt), prompts)
    for key, value in ref.items():
        if value.is_floating_point():
            error = ((got[key] - value).norm() / value.norm()).item()
            print(f"{fmt} {key}: relative error {error:.4f}")
            assert 0 < error < bound


def full_shape(**changes) -> pre.PreprocessShape:
    configs = VERSIONS["2.0"].configs
    shape = pre.PreprocessShape(
        GEMMA3_FOR_LTX,
        dict(configs["connectors"]),
        dict(configs["vae"]),
        dict(configs["audio_vae"]),
        "bfloat16",
        1024,
        (121, 512, 768),
        24.0,
        False,
    )
    return replace(shape, **changes)


def test_full_size_gemma_bytes_per_format() -> None:
    """Gemma 3 12B (ltx-core's config) on meta: 12.19 B parameters; the text encoder's bytes
    in bf16, int8 and nf4 as the plan places them."""
    encoder = pre._text_encoder(full_shape())
    assert sum(p.numel() for p in encoder.parameters()) == 12_187_325_040
    sizes = {
        fmt: pre.text_phase(full_shape(text_quantize=fmt)).terms for fmt in ("none", "int8", "nf4")
    }
    encoder_bytes = {
        fmt: next(v for k, v in t.items() if k.startswith("text encoder"))
        for fmt, t in sizes.items()
    }
    buffers = sum(b.numel() * b.element_size() for b in encoder.buffers())
    assert encoder_bytes["none"] == 2 * 12_187_325_040 + buffers
    print({fmt: f"{b / GIB:.2f} GiB" for fmt, b in encoder_bytes.items()})
    assert 12.2 * GIB < encoder_bytes["int8"] < 12.4 * GIB
    assert 7.2 * GIB < encoder_bytes["nf4"] < 7.3 * GIB


def test_preprocess_fits_24gb_only_with_a_quantised_text_encoder() -> None:
    """LTX-2.0 at 121x512x768 with audio: the bf16 Gemma phase is over 24 GB; int8 fits, and
    the refusal names it."""
    card = Card("a 24GB card", 24 * 10**9)
    shape = full_shape()
    assert pre.gpu_peak(pre.phases(shape)) > card.total
    options = pre.fitting(shape, card.total)
    assert options[0][0] == "preprocess.text_encoder_quantize=int8"
    assert options[0][1] <= card.total
    with pytest.raises(
        UserError, match=r"will not fit a 24GB card.*preprocess\.text_encoder_quantize=int8"
    ):
        pre.check_fits(shape, card)
    pre.check_fits(full_shape(text_quantize="int8"), card)  # fits: no error


def test_gemma_config_is_ltx_cores() -> None:
    """ltx.fullsize.GEMMA3_FOR_LTX holds ltx-core 1.0.0's facts (text_encoders/gemma/config.py)."""
    from ltx_core.text_encoders.gemma.config import GEMMA3_CONFIG_FOR_LTX

    theirs = GEMMA3_CONFIG_FOR_LTX.to_dict()
    for section in ("text_config", "vision_config"):
        for key, value in GEMMA3_FOR_LTX[section].items():
            assert theirs[section][key] == value, (section, key)
    assert theirs["architectures"] == GEMMA3_FOR_LTX["architectures"]
