"""What a training step's parts weigh, counted before any weight loads: the component configs,
the latents of one sample, the base's weights in each storage format (parameter counts on the
meta device), the adapter and its optimiser state. `trainer.plan` adds these up."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ltx import bases
from ltx.config import ModelConfig
from stagekit.errors import UserError
from trainer.plan_trace import StepShape

GIB = 1 << 30
MIB = 1 << 20


# Weight-only formats (trainer/quantize.py): bytes per weight, and what each keeps beside it.
# int8/fp8: optimum-quanto, one absmax scale per output row in the load dtype.
# nf4: bitsandbytes NF4, blocks of 64 weights, each block's absmax double-quantised to 8 bits
# with one float32 scale per 256 blocks (QLoRA's layout).
QUANT_FORMATS = ("none", "int8", "fp8", "nf4")
NF4_BLOCK, NF4_BLOCK2 = 64, 256


def model_configs(cfg: ModelConfig, model_path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The transformer and connectors configs of the model, without its weights: the model
    folder's own (when there is one), `model.config_dir`'s, the tiny or demo builder's, else
    the version's full-size configs (ltx.versions)."""
    from ltx.versions import get_version

    names = ("transformer", "connectors")
    for folder in (model_path, Path(cfg.config_dir).expanduser() if cfg.config_dir else None):
        if folder is not None and all((folder / n / "config.json").is_file() for n in names):
            return {n: config_json(folder / n / "config.json") for n in names}
    if cfg.source == "tiny":
        from ltx import tiny

        v = cfg.ltx_version
        return {"transformer": tiny.transformer_config(v), "connectors": tiny.connectors_config(v)}
    if cfg.source in bases.names():
        return {n: dict(c) for n, c in bases.packaged_base(cfg.source).configs.items()}
    configs = get_version(cfg.ltx_version).configs
    return {n: dict(configs[n]) for n in names}


def config_json(path: Path) -> dict[str, Any]:
    """A component's config.json without its `_`-prefixed bookkeeping keys."""
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


@dataclass(frozen=True)
class Latents:
    """One sample as the step sees it: [C, F, H, W] video, [C, L, M] audio (None: video
    only), the padded prompt length."""

    video: tuple[int, ...]
    audio: tuple[int, ...] | None
    text_tokens: int
    fps: float
    label: str
    references: tuple[tuple[int, ...], ...] = ()  # a reference sheet's [C, f, h, w] each


def latents_for_clip(
    cfg: ModelConfig,
    transformer: dict[str, Any],
    frames: int,
    height: int,
    width: int,
    fps: float,
    audio: bool,
) -> Latents:
    """The latents a frames x height x width clip encodes to (the VAE's compression, the
    audio VAE's 25 latents a second)."""
    from ltx.specs import AUDIO_LATENTS_PER_SECOND, spec_for_source

    spec = spec_for_source(cfg.source)
    t, s, _ = transformer.get("vae_scale_factors", (8, 32, 32))
    channels = transformer.get("in_channels", 128)
    video = (channels, (frames - 1) // t + 1, height // s, width // s)
    mel = spec.audio_mel_bins // 4
    length = round(frames / fps * AUDIO_LATENTS_PER_SECOND)
    audio_shape = (transformer.get("audio_in_channels", 128) // mel, length, mel)
    label = f"{frames}x{height}x{width} @ {fps:g} fps"
    return Latents(video, audio_shape if audio else None, spec.text_tokens, fps, label)


def latents_from_cache(cache_dir: Path, index: dict[str, Any], strategy: str) -> Latents:
    """The largest cached sample's shapes, read from its shard's header (no tensor is read
    but the prompt length)."""
    from safetensors import safe_open

    from trainer.cache import MASK, TEXT, TEXT_LENGTH
    from trainer.cache_references import REFERENCE_PREFIX

    entries = list(index.get("entries", {}).values())
    if not entries:
        raise UserError(f"the latent cache {cache_dir} is empty: re-run `ltx-lora preprocess`")
    largest = max(entries, key=lambda e: e["bucket"][0] * e["bucket"][1] * e["bucket"][2])
    with safe_open(str(Path(cache_dir) / largest["file"]), framework="pt") as f:
        keys = set(f.keys())
        video = tuple(f.get_slice("video").get_shape())
        audio = tuple(f.get_slice("audio").get_shape()) if "audio" in keys else None
        if TEXT_LENGTH in keys:
            tokens = int(f.get_tensor(TEXT_LENGTH)[0])
        else:  # cache format 2: padded text
            tokens = f.get_slice(TEXT + MASK).get_shape()[-1]
        sheet = [k for k in sorted(keys) if k.startswith(REFERENCE_PREFIX)]
        sheet.sort(key=lambda k: int(k.removeprefix(REFERENCE_PREFIX)))
        references = tuple(tuple(f.get_slice(k).get_shape()) for k in sheet)
    if strategy == "text_to_video":
        audio = None
    w, h, frames = largest["bucket"]
    label = f"{frames}x{h}x{w} @ {float(largest['fps']):g} fps (the cache's largest bucket)"
    return Latents(video, audio, tokens, float(largest["fps"]), label, references)


def quantized_bytes(numel: int, rows: int, layers: int, fmt: str, dtype_bytes: int) -> int:
    """Bytes of `layers` Linear weights of `numel` elements and `rows` output rows in all, as
    `fmt` stores them (what trainer.quantize.stored_bytes reports)."""
    if fmt == "none":
        return numel * dtype_bytes
    if fmt in ("int8", "fp8"):
        return numel + rows * dtype_bytes
    if fmt == "nf4":
        blocks = numel // NF4_BLOCK
        return numel // 2 + blocks + 4 * (-(-blocks // NF4_BLOCK2)) + 4 * layers
    raise UserError(f"model.quantize={fmt} is not one of {', '.join(QUANT_FORMATS)}")


def base_bytes(facts: dict[str, Any], fmt: str, dtype_bytes: int) -> int:
    """The transformer as placed: block Linear weights in `fmt`, everything else as loaded."""
    linear = facts["blocks_linear"]
    quantized = quantized_bytes(linear["numel"], linear["rows"], linear["count"], fmt, dtype_bytes)
    return facts["transformer_bytes"] - linear["numel"] * dtype_bytes + quantized


def block_bytes(facts: dict[str, Any], fmt: str, dtype_bytes: int) -> int:
    """What one swapped block streams: its frozen Linear weights (in `fmt`) and biases."""
    one = facts["block_linear"]
    weights = quantized_bytes(one["numel"], one["rows"], one["count"], fmt, dtype_bytes)
    return weights + one["bias_bytes"]


def optimizer_state(facts: dict[str, Any], optimizer: str) -> int:
    """AdamW: two moments in the adapter's dtype; 8-bit AdamW: one byte each plus a float32
    scale per 256-value block (bitsandbytes' blockwise layout)."""
    numel = facts["adapter_numel"]
    if optimizer == "adamw8bit":
        return 2 * (numel + 4 * (-(-numel // 256)))
    return 2 * facts["adapter_bytes"]


def format_label(fmt: str, facts: dict[str, Any]) -> str:
    dtype = facts["dtype"]
    return dtype if fmt == "none" else f"block Linear layers {fmt}, the rest {dtype}"


def model_facts(step: StepShape) -> dict[str, Any]:
    """Parameter counts of the transformer (with the adapter) and the connectors, on meta."""
    import torch

    from trainer.plan_trace import build

    quantize = _quantizable()
    transformer, connectors = build(replace(step, checkpointing=False), "meta")
    blocks = {"numel": 0, "rows": 0, "count": 0}
    per_block: dict[int, dict[str, int]] = {}
    largest = 0
    for name, module in transformer.named_modules():
        plain = name.replace(".base_layer", "")
        if not isinstance(module, torch.nn.Linear) or module.weight.requires_grad:
            continue
        if not quantize(plain, module):
            continue
        n, rows = module.weight.numel(), module.weight.shape[0]
        blocks["numel"] += n
        blocks["rows"] += rows
        blocks["count"] += 1
        largest = max(largest, n)
        index = int(plain.split(".")[1])
        one = per_block.setdefault(index, {"numel": 0, "rows": 0, "count": 0, "bias_bytes": 0})
        one["numel"] += n
        one["rows"] += rows
        one["count"] += 1
        if module.bias is not None:
            one["bias_bytes"] += module.bias.numel() * module.bias.element_size()
    frozen = [p for p in transformer.parameters() if not p.requires_grad]
    adapter = [p for p in transformer.parameters() if p.requires_grad]
    dtype = getattr(torch, step.dtype)
    return {
        "dtype": step.dtype,
        "dtype_bytes": torch.empty((), dtype=dtype).element_size(),
        "transformer_params": sum(p.numel() for p in frozen),
        "transformer_bytes": tensor_bytes(frozen) + tensor_bytes(transformer.buffers()),
        "blocks_linear": blocks,
        # the largest block: every swapped block gets a ring buffer this size
        "block_linear": max(per_block.values(), key=lambda b: b["numel"] * 2 + b["bias_bytes"]),
        "largest_block_linear": largest,
        "connectors_params": sum(p.numel() for p in connectors.parameters()),
        "connectors_bytes": module_bytes(connectors),
        "projection_bytes": projection_bytes(connectors),
        "adapter_numel": sum(p.numel() for p in adapter),
        "adapter_bytes": tensor_bytes(adapter),
    }


def projection_bytes(connectors: Any) -> int:
    """The connectors' text projections (trainer.placement keeps them on the host)."""
    from trainer.text_encoder import PROJECTIONS

    parts = [getattr(connectors, n) for n in PROJECTIONS if hasattr(connectors, n)]
    return sum(module_bytes(m) for m in parts)


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers."""
    return tensor_bytes([*module.parameters(), *module.buffers()])


def tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _quantizable() -> Any:
    """trainer.quantize's rule for which layers a format replaces (the block Linear layers)."""
    try:
        from trainer.quantize import quantizable
    except ImportError:  # before quantisation existed: the same rule
        return lambda name, _module: name.startswith("transformer_blocks.")
    return quantizable
