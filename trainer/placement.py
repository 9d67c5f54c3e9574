"""Where the frozen base goes for training: loaded, and quantised on the device layer by layer
(`model.quantize`). Block swap (`trainer.swap`) then takes its blocks to host memory and the rest
moves to the device; the FSDP2 path shards an unquantised base instead
(`trainer.runtime.shard_base`)."""

from __future__ import annotations

from pathlib import Path

import torch

from ltx.config import ModelConfig
from ltx.loading import load_components, torch_dtype
from ltx.streaming import TensorReader, component_sources
from stagekit.errors import ConfigError
from trainer.config import LoraConfig, TrainerConfig
from trainer.quantize import (
    BACKENDS,
    QuantReport,
    check_supported,
    quantizable,
    quantize_base,
    quantize_module,
    swapped,
)


def check_placement(
    model_cfg: ModelConfig, lora_cfg: LoraConfig, cfg: TrainerConfig, device: torch.device
) -> None:
    """Refuse a placement that cannot run here, before a checkpoint folder or any weight
    exists."""
    quantize = model_cfg.quantize
    if quantize != "none" and cfg.distributed == "fsdp2":
        raise ConfigError(
            f"model.quantize={quantize} with trainer.distributed=fsdp2 is not supported yet "
            "(FSDP2 shards plain tensors): use trainer.distributed=ddp with a quantised base, "
            "or model.quantize=none to shard"
        )
    if quantize == "nf4" and lora_cfg.kind == "lokr":
        # PEFT's LoKr reshapes its update to the base weight's stored shape: packed for nf4
        raise ConfigError(
            "lora.kind=lokr cannot train on an nf4 base (PEFT 0.21's LoKr needs the weight's "
            "[out, in] shape, which bitsandbytes packs): use lora.kind=lora or dora, or "
            "model.quantize=int8"
        )
    check_supported(model_cfg.quantize, device, torch_dtype(model_cfg.dtype))


def place_base(
    model_path: Path, model_cfg: ModelConfig, device: torch.device, *, host_blocks: int = 0
) -> torch.nn.Module:
    """The transformer of `model_path`, its block Linear layers quantised to `model_cfg.quantize`
    on `device` one at a time; those of the last `host_blocks` blocks (which block swap streams
    from host memory) go back to the host as soon as each is quantised. The rest stays on the
    host: the caller moves it (`.to(device)`) once block swap has taken its blocks, or shards
    it (FSDP2), so no full copy of the base ever reaches the device.

    The weights stream from their files tensor by tensor into a model built on the meta
    device, so the host never holds a float copy of what is quantised: its peak is what stays
    there plus one layer in flight (docs/training.md, "Memory")."""
    check_supported(model_cfg.quantize, device, torch_dtype(model_cfg.dtype))
    found = component_sources(Path(model_path), "transformer")
    if found is None:  # a .bin folder: loaded whole, then quantised
        transformer = load_components(model_path, ["transformer"], model_cfg.dtype)
        transformer = transformer["transformer"]
        report = quantize_base(transformer, model_cfg.quantize, device, host_blocks=host_blocks)
    else:
        transformer, sources = found
        report = _stream(transformer, sources, model_cfg, device, host_blocks)
    if report.modules:
        print(report.describe())
    return transformer.eval()


def _stream(
    transformer: torch.nn.Module,
    sources: dict[str, tuple[Path, str]],
    model_cfg: ModelConfig,
    device: torch.device,
    host_blocks: int,
) -> QuantReport:
    """Fill the meta `transformer` from `sources`, module by module, in the load dtype; each
    block Linear layer is quantised (`quantize_module`) as soon as its tensors are read."""
    kind, dtype, reader = model_cfg.quantize, torch_dtype(model_cfg.dtype), TensorReader()
    modules = float_bytes = quantized_bytes = 0
    for name in [n for n, _ in transformer.named_modules()]:  # by name: a replaced layer is
        module = transformer.get_submodule(name)  # freed at once, with its float weight
        for attr, tensors in (("_parameters", module._parameters), ("_buffers", module._buffers)):
            for local, meta in list(tensors.items()):
                key = f"{name}.{local}" if name else local
                if meta is None or key not in sources:
                    continue  # a non-persistent buffer: made by the constructor, not on meta
                value = reader.read(*sources[key], shape=tuple(meta.shape)).to(dtype)
                if attr == "_parameters":
                    value = torch.nn.Parameter(value, requires_grad=meta.requires_grad)
                tensors[local] = value
        if kind != "none" and quantizable(name, module):
            on_host = swapped(transformer, name, host_blocks)
            before, after = quantize_module(transformer, name, kind, device, on_host=on_host)
            modules, float_bytes, quantized_bytes = (
                modules + 1,
                float_bytes + before,
                quantized_bytes + after,
            )
        del module
    if kind == "none":
        return QuantReport("none", "")
    return QuantReport(kind, BACKENDS[kind], modules, float_bytes, quantized_bytes)
