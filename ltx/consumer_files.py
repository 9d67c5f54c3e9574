"""The state dict each consumer loads, made from a trained PEFT adapter (see ltx.exports.TABLE).

Every function here works on the meta device too (the key-coverage tests build full-size
adapters there). DoRA for ComfyUI needs the base weights the adapter was trained against:
`base_weight(module)` gives one (dequantised, for a quantised base).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ltx.exports import outcome, refusal
from ltx.lora import (
    COMFY_DORA_SUFFIX,
    DORA_SUFFIX,
    adapter_metadata,
    adapter_state_dict,
    comfyui_adapter,
    fold_alpha,
    lokr_as_lora,
)
from ltx.lora_keys import to_comfyui
from stagekit.errors import UserError

BaseWeight = Callable[[str], torch.Tensor]


class ExportRefused(UserError):
    """A consumer cannot load this adapter exactly; the message says why and what instead."""


def consumer_state(
    transformer: torch.nn.Module, consumer: str, base_weight: BaseWeight | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of `consumer`'s file for the adapter in `transformer`; ExportRefused where the
    table refuses the cell (or a LoKr's equal LoRA is over its size limit)."""
    meta = adapter_metadata(transformer)
    kind = meta["kind"]
    if outcome(kind, consumer).result == "refused":
        raise ExportRefused(refusal(kind, consumer))
    state = adapter_state_dict(transformer, device=None)  # meta in the full-size key tests
    if kind == "lokr":
        comfy = comfyui_adapter(state, kind, float(meta["alpha"]), int(meta["rank"]))
        if consumer == "comfyui":
            return comfy
        lora = lokr_as_lora(comfy)
        _check_lora_size(lora, consumer)
        return lora if consumer == "diffusers" else to_comfyui(lora)
    folded = fold_alpha(state)
    if consumer == "diffusers":
        return folded
    if consumer == "ltx-pipelines":
        return to_comfyui(folded)
    if kind == "lora":
        return to_comfyui(state)  # ComfyUI applies `.alpha` itself
    return to_comfyui(comfyui_dora(folded, base_weight or _peft_base(transformer)))


def comfyui_dora(folded: dict[str, torch.Tensor], base_weight: BaseWeight) -> dict:
    """PEFT's DoRA (alpha folded) with each magnitude m rewritten to ComfyUI's `dora_scale`.

    PEFT: W' = m / ‖W + ΔW‖ · (W + ΔW), norms per output row. ComfyUI (`weight_decompose`, a
    [out, 1] scale) divides by the BASE row norm plus float32 eps: W' = d / (‖W‖ + eps)·(W + ΔW).
    So d = m · (‖W‖ + eps) / ‖W + ΔW‖, from the base weights (float64 norms, like its float32
    cast of the weight)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in folded.items():
        if not key.endswith(DORA_SUFFIX):
            out[key] = value
            continue
        base = key.removesuffix(DORA_SUFFIX)
        module = base.removeprefix("transformer.")
        a, b = folded[f"{base}.lora_A.weight"], folded[f"{base}.lora_B.weight"]
        w = base_weight(module).to(device=a.device, dtype=torch.float32).double()
        merged_norm = (w + b.double() @ a.double()).norm(dim=1)
        base_norm = w.norm(dim=1) + torch.finfo(torch.float32).eps
        scale = value.double() * base_norm / merged_norm
        out[base + COMFY_DORA_SUFFIX] = scale.float().reshape(-1, 1)
    return out


def _peft_base(transformer: torch.nn.Module) -> BaseWeight:
    def weight(module: str) -> torch.Tensor:
        return transformer.get_submodule(module).get_base_layer().weight

    return weight


def _check_lora_size(lora: dict[str, torch.Tensor], consumer: str) -> None:
    """Refuse a LoKr whose equal LoRA is larger than the dense update it encodes."""
    lora_params = dense = 0
    for key, a in lora.items():
        if key.endswith(".lora_A.weight"):
            b = lora[key.replace(".lora_A.", ".lora_B.")]
            lora_params += a.numel() + b.numel()
            dense += b.shape[0] * a.shape[1]
    if lora_params > dense:
        why = (
            f"the LoRA equal to this LoKr has {lora_params:,} parameters, more than the "
            f"{dense:,} of the dense update it encodes"
        )
        raise ExportRefused(refusal("lokr", consumer, why))
