"""Where the frozen base goes for training, in one place: `place` loads it from its files
(quantised on the device layer by layer, `model.quantize`), puts the adapter on it, hands the
last blocks to block swap (`trainer.swap`, host memory) and moves the rest to the device, or
shards it over the processes (FSDP2). The loop sees a `Placement`: the transformer, its adapter
parameters, and `whole()` for the main process's validation and export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ltx.config import ModelConfig
from ltx.loading import load_components, torch_dtype
from ltx.streaming import TensorReader, component_sources
from stagekit.errors import ConfigError, UserError
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
from trainer.swap import BlockSwap, attach_swap


@dataclass
class Placement:
    """The base as training placed it, with the adapter on it."""

    transformer: torch.nn.Module
    params: dict[str, torch.nn.Parameter]  # the adapter's: the only trainable ones
    swap: BlockSwap | None  # the streamer of the swapped blocks (None: all resident)
    sharded: bool  # FSDP2 over several processes
    source: tuple[Path, ModelConfig, LoraConfig, torch.device, str]  # to place a whole copy

    def layout(self) -> dict[str, Any]:
        """What the run records about where the base was (a collective call when sharded)."""
        return base_bytes(self.transformer) if self.sharded else {}

    def whole(self) -> tuple[torch.nn.Module, dict[str, torch.nn.Parameter]]:
        """A transformer the main process can run alone, with the trained adapter: this one,
        or (sharded) an unsharded copy (`unsharded_copy`)."""
        if not self.sharded:
            return self.transformer, self.params
        model_path, model_cfg, lora_cfg, device, modality = self.source
        return unsharded_copy(model_path, model_cfg, lora_cfg, device, self.params, modality)


def place(
    model_path: Path,
    model_cfg: ModelConfig,
    lora_cfg: LoraConfig,
    cfg: TrainerConfig,
    device: torch.device,
    processes: int = 1,
    modality: str = "both",
) -> Placement:
    """The base of `model_path` placed for training on `device`, the adapter attached (its
    initial values come from torch's global RNG: seed it first). The order matters: the
    adapter and checkpointing go on before block swap takes its blocks, and swap before the
    rest moves to the device, so the swapped weights never reach the device whole."""
    swapped = cfg.blocks_to_swap if isinstance(cfg.blocks_to_swap, int) else 0
    transformer = place_base(model_path, model_cfg, device, host_blocks=swapped)
    params = attach_adapter(transformer, lora_cfg, modality)
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    swap = attach_swap(transformer, cfg.blocks_to_swap, torch.device("cpu"), device)
    # The transformer is not wrapped in DDP (its forward needs the module's own attributes):
    # the trainer averages the adapter's gradients itself. Under fsdp2 only the frozen base
    # is sharded; the adapter stays whole, averaged the same way.
    sharded = cfg.distributed == "fsdp2" and processes > 1
    if sharded:
        shard_base(transformer, device, processes)
    else:
        transformer.to(device)
    source = (model_path, model_cfg, lora_cfg, device, modality)
    return Placement(transformer, params, swap, sharded, source)


def place_connectors(connectors: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The frozen text connectors on `device`, but for their text projections: training reads
    projected text from the cache and runs only the connectors' 1-D transformers
    (`ltx.forward.connect_text`), so the projections (1.3 GiB of 2.0's 2.7 in bf16, 2.2 of
    2.3's 5.9) stay on the host."""
    from trainer.text_encoder import PROJECTIONS

    connectors.requires_grad_(False).eval()
    for name, child in connectors.named_children():  # it holds no tensor of its own
        if name not in PROJECTIONS:
            child.to(device)
    return connectors


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


def shard_base(transformer: torch.nn.Module, device: torch.device, processes: int) -> None:
    """FSDP2 (`fully_shard`) over all processes: each transformer block is one unit, the rest
    (patch embeddings, norms, output projections) the root unit. The adapter's parameters are
    left out (`ignored_params`): they stay whole on every process, so the trainer's own
    all-reduce averages their gradients exactly once, and checkpoints and exports see plain
    tensors, as under ddp. Blocks are gathered for their forward, freed after it, and gathered
    again in backward (the gradients flowing through the frozen weights need them)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (processes,))
    adapter = {p for p in transformer.parameters() if p.requires_grad}
    with torch.no_grad():  # FSDP2 leaves ignored parameters where they are
        for p in adapter:
            p.data = p.data.to(device)
    # fully_shard moves each unit to the device whole, then keeps only this process's shard:
    # the peak is one block, never the whole base (so the base is not moved there beforehand)
    for block in transformer.transformer_blocks:
        fully_shard(block, mesh=mesh, ignored_params=adapter, reshard_after_forward=True)
    fully_shard(transformer, mesh=mesh, ignored_params=adapter, reshard_after_forward=True)


def base_bytes(transformer: torch.nn.Module) -> dict[str, Any]:
    """Bytes of the frozen base: in all, and held by each process (its local FSDP2 shards);
    a collective call, on every process."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    frozen = [p for p in transformer.parameters() if not p.requires_grad]
    local = sum(
        (p.to_local() if isinstance(p, DTensor) else p).numel() * p.element_size() for p in frozen
    )
    per_rank: list[int] = [0] * dist.get_world_size()
    dist.all_gather_object(per_rank, local)
    total = sum(p.numel() * p.element_size() for p in frozen)
    return {"base_param_bytes": total, "base_param_bytes_per_rank": per_rank}


def attach_adapter(
    transformer: torch.nn.Module, lora_cfg: LoraConfig, modality: str = "both"
) -> dict[str, torch.nn.Parameter]:
    """Freeze the base, wrap the configured modules with the adapter; its trainable parameters.
    `modality` (what the run trains: both, video, audio) keeps the adapter off the modules of
    the stream it does not train (`ltx.lora.for_modality`)."""
    from ltx.lora import add_lora, for_modality, target_modules

    transformer.requires_grad_(False)
    targets = for_modality(lora_cfg.targets, modality)
    if modality == "audio" and not target_modules(transformer, targets):
        raise UserError(
            f"trainer.strategy=text_to_audio trains the audio stream, and lora.targets="
            f"{lora_cfg.targets} holds no audio module: set lora.targets=audio (or all)"
        )
    add_lora(
        transformer,
        lora_cfg.rank,
        lora_cfg.alpha,
        lora_cfg.dropout,
        targets,
        kind=lora_cfg.kind,
    )
    return {n: p for n, p in transformer.named_parameters() if p.requires_grad}


def unsharded_copy(
    model_path: Path,
    model_cfg: ModelConfig,
    lora_cfg: LoraConfig,
    device: torch.device,
    trained: dict[str, torch.nn.Parameter],
    modality: str = "both",
) -> tuple[torch.nn.Module, dict[str, torch.nn.Parameter]]:
    """A plain transformer with the trained adapter, for the main process's validation loss and
    export, which it runs alone (a sharded block would wait for the other processes): the frozen
    base reloaded from the model folder (it never changed), the adapter's weights copied in.
    Export loads the pipeline's own full transformer too, so this adds no new peak on top."""
    transformer = place_base(model_path, model_cfg, device).to(device)  # as training placed it
    params = attach_adapter(transformer, lora_cfg, modality)
    if params.keys() != trained.keys():
        raise RuntimeError("the unsharded copy's adapter differs from the trained one's")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(trained[name].detach())
    return transformer, params
