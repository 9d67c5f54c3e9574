"""Where the frozen base goes for training: loaded, and quantised on the device layer by layer
(`model.quantize`). Block swap (`trainer.swap`) then takes its blocks to host memory and the rest
moves to the device; the FSDP2 path shards an unquantised base instead
(`trainer.runtime.shard_base`)."""

from __future__ import annotations

from pathlib import Path

import torch

from ltx.config import ModelConfig
from ltx.loading import load_components, torch_dtype
from stagekit.errors import ConfigError
from trainer.config import LoraConfig, TrainerConfig
from trainer.quantize import check_supported, quantize_base


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
    it (FSDP2), so no full copy of the base ever reaches the device."""
    check_supported(model_cfg.quantize, device, torch_dtype(model_cfg.dtype))
    transformer = load_components(model_path, ["transformer"], model_cfg.dtype)["transformer"]
    report = quantize_base(transformer, model_cfg.quantize, device, host_blocks=host_blocks)
    if report.modules:
        print(report.describe())
    return transformer
