"""Each consumer's arithmetic applied to the pipeline's transformer for the export check
(`trainer.export.verify_export`): ComfyUI's patching, ltx-core's fusion, PEFT's LoKr loading;
the original weights come back after each."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file

from ltx import comfyui_math, ltx_core_fuse
from ltx.lora_keys import diffusers_module

LOKR_CONFIG_KEY = "lokr_config"


@contextmanager
def load_lokr(transformer: torch.nn.Module, path: Path) -> Iterator[None]:
    """A LoKr PEFT file (keys `transformer.<m>.lokr_w*`, `lokr_config` header) injected into
    `transformer` as adapter `export-check`; removed after."""
    from peft import LoKrConfig
    from peft.utils import set_peft_model_state_dict
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(LOKR_CONFIG_KEY)
    if raw is None:
        raise RuntimeError(f"{path.name}: no {LOKR_CONFIG_KEY} header, cannot rebuild the LoKr")
    fields = json.loads(raw)
    known = set(LoKrConfig.__dataclass_fields__)
    config = LoKrConfig(**{k: v for k, v in fields.items() if k in known and k != "peft_type"})
    sd = {k.removeprefix("transformer."): v for k, v in load_file(str(path)).items()}
    transformer.add_adapter(config, adapter_name="export-check")
    try:
        result = set_peft_model_state_dict(transformer, sd, adapter_name="export-check")
        if result.unexpected_keys:
            raise RuntimeError(
                f"{path.name}: keys the LoKr does not have: {result.unexpected_keys}"
            )
        transformer.set_adapter("export-check")
        yield
    finally:
        transformer.delete_adapters("export-check")


@contextmanager
def comfyui_merged(transformer: torch.nn.Module, sd: dict[str, torch.Tensor]) -> Iterator[None]:
    """The transformer with a ComfyUI-layout adapter patched into its Linear weights by
    ComfyUI's arithmetic (`ltx.comfyui_math`); the original weights come back after."""
    weights = {}
    for official, parts in comfyui_math.modules(sd).items():
        module = diffusers_module(official)
        weights[module] = comfyui_math.patched_weight(_weight(transformer, module), parts)
    with patched(transformer, weights):
        yield


@contextmanager
def ltx_core_fused(transformer: torch.nn.Module, sd: dict[str, torch.Tensor]) -> Iterator[None]:
    """The transformer with an ltx-pipelines file fused into its weights as ltx-core fuses it
    (its own `apply_loras` where it imports); the original weights come back after."""
    official = sorted(
        k.removeprefix("diffusion_model.").removesuffix(".lora_A.weight")
        for k in sd
        if k.endswith(".lora_A.weight")
    )
    shapes = {f"{m}.weight": _weight(transformer, diffusers_module(m)).shape for m in official}
    if ltx_core_fuse.available():
        deltas = ltx_core_fuse.fused_deltas(sd, shapes)
    else:  # its arithmetic (fuse_loras.py _prepare_deltas): B·strength @ A, nothing else
        deltas = {
            f"{m}.weight": sd[f"diffusion_model.{m}.lora_B.weight"].float()
            @ sd[f"diffusion_model.{m}.lora_A.weight"].float()
            for m in official
        }
    weights = {}
    for m in official:
        module = diffusers_module(m)
        base = _weight(transformer, module)
        weights[module] = (base.float() + deltas[f"{m}.weight"]).to(base.dtype)
    with patched(transformer, weights):
        yield


def _weight(transformer: torch.nn.Module, module: str) -> torch.Tensor:
    return transformer.get_submodule(module).weight.detach()


@contextmanager
def patched(transformer: torch.nn.Module, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    """Linear weights replaced by `weights` ({module: weight}) for the duration."""
    saved = {}
    with torch.no_grad():
        for module, weight in weights.items():
            linear = transformer.get_submodule(module)
            saved[module] = linear.weight.detach().clone()
            linear.weight.copy_(weight)
    try:
        yield
    finally:
        with torch.no_grad():
            for module, weight in saved.items():
                transformer.get_submodule(module).weight.copy_(weight)
