"""The text phase of preprocessing: the Gemma text encoder and the text connectors' projections,
placed on the encoding device, the encoder optionally quantised
(`preprocess.text_encoder_quantize`).

Gemma 3 12B is 22.7 GiB in bf16: more than a 16 or 24 GB card holds. Quantised, it is 12.3 GiB
(int8) or 7.3 GiB (nf4), counted on the meta device (tests/unit/test_trainer_plan_preprocess.py).
A Gemma folder is quantised by transformers itself while it loads each tensor onto the
device (`quantization_config` with `device_map`), so neither the host nor the card ever holds
the bf16 copy: int8 through optimum-quanto (weight-only, per-row scales: the same format as
`model.quantize=int8`), nf4 through bitsandbytes (the same as `model.quantize=nf4`). LTX-2.5's
Gemma 4 comes from one official file (`ltx.gemma4`): it is read whole on the host, then
quantised onto the device layer by layer (the host holds its bf16 copy once; the card never)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from ltx.config import ModelConfig
from ltx.loading import load_components, model_index, torch_dtype
from trainer.quantize import check_supported

TEXT_PARTS = ["text_encoder", "tokenizer", "connectors"]
TextQuantize = Literal["none", "int8", "nf4"]
# The connectors' text projections: preprocessing caches projected text, so only these go to the
# device (1.3 GiB of 2.0's 2.7, 2.2 of 2.3's 5.9 in bf16); their 1-D transformers run in training
PROJECTIONS = ("text_proj_in", "video_text_proj_in", "audio_text_proj_in")
# transformers keeps its output head unquantised (`get_keys_to_not_convert`): the same here
KEEP_FLOAT = ("lm_head",)


def load_text_parts(
    model_path: Path, model_cfg: ModelConfig, device: str, quantize: TextQuantize = "none"
) -> dict[str, Any]:
    """The text encoder, tokenizer and connectors of `model_path`, on `device`."""
    if quantize == "none":
        parts = load_components(model_path, TEXT_PARTS, model_cfg.dtype)
        parts["text_encoder"].to(device)
    else:
        # nf4 needs bitsandbytes' kernels for the device; int8 runs wherever quanto does
        check_supported(quantize, torch.device(device), setting="preprocess.text_encoder_quantize")
        parts = load_components(model_path, ["tokenizer", "connectors"], model_cfg.dtype)
        parts["text_encoder"] = _quantized_encoder(model_path, model_cfg, device, quantize)
    for name in PROJECTIONS:  # all preprocessing runs of the connectors (ltx.encode.project_text)
        if hasattr(parts["connectors"], name):
            getattr(parts["connectors"], name).to(device)
    return parts


def _quantized_encoder(
    model_path: Path, model_cfg: ModelConfig, device: str, quantize: str
) -> torch.nn.Module:
    from ltx.official import read_view

    view = read_view(model_path)
    if view is not None and "text_encoder" in view["files"]:  # Gemma 4 from its official file
        encoder = load_components(model_path, ["text_encoder"], model_cfg.dtype)["text_encoder"]
        return _quantize_in_place(encoder, quantize, torch.device(device))
    _, cls_name = model_index(model_path)["text_encoder"]
    import transformers

    cls = getattr(transformers, cls_name)
    encoder = cls.from_pretrained(
        str(Path(model_path) / "text_encoder"),
        local_files_only=True,
        dtype=torch_dtype(model_cfg.dtype),
        quantization_config=quantization_config(quantize, model_cfg.dtype),
        device_map={"": device},
    )
    for module in encoder.modules():
        # bitsandbytes' CPU repacking of nf4 weights (AVX512-BF16) fails for layers narrower
        # than its block of 64 and gains nothing for one prompt at a time (as quantize.py)
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return encoder.eval()


def quantization_config(quantize: str, dtype: str) -> Any:
    """transformers' own config for loading a text encoder quantised."""
    from transformers import BitsAndBytesConfig, QuantoConfig

    if quantize == "int8":
        return QuantoConfig(weights="int8")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch_dtype(dtype),
        bnb_4bit_use_double_quant=True,  # as model.quantize=nf4 stores its scales
        llm_int8_skip_modules=list(KEEP_FLOAT),
    )


def _quantize_in_place(
    encoder: torch.nn.Module, quantize: str, device: torch.device
) -> torch.nn.Module:
    """Each Linear layer (but the output head) to `device` and quantised there, one at a
    time; the rest follows once the float layers are gone."""
    from trainer.quantize import quantize_linear

    names = [
        n
        for n, m in encoder.named_modules()
        if type(m) is torch.nn.Linear and not n.endswith(KEEP_FLOAT)
    ]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = encoder.get_submodule(parent) if parent else encoder
        setattr(owner, child, quantize_linear(getattr(owner, child), quantize, device))
    return encoder.to(device).eval()


def quantized_layers(encoder: torch.nn.Module) -> dict[str, int]:
    """How many of the encoder's layers hold each quantised format (reports and tests)."""
    from trainer.quantize import module_kind

    counts: dict[str, int] = {}
    for module in encoder.modules():
        if (kind := module_kind(module)) is not None:
            counts[kind] = counts.get(kind, 0) + 1
    return counts
