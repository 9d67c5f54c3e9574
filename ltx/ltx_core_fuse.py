"""Lightricks' ltx-core LoRA fusion (what `ltx-pipelines --lora PATH STRENGTH` runs), called for
real where `ltx-core` imports (`make setup` installs 1.0.0 with --no-deps).

What its code does (ltx-core 1.0.0, `ltx_core/loader/`): `sd_ops.py` L117-119
`LTXV_LORA_COMFY_RENAMING_MAP` removes `diffusion_model.` from every LoRA key; `fuse_loras.py`
L46-65 `_prepare_deltas` looks up `<module>.lora_A.weight` / `.lora_B.weight` for each model
weight `<module>.weight` and computes `matmul(B * strength, A)` cast to the target dtype (bf16 by
default); nothing else in the file is read (`.alpha`, `dora_scale`, LoKr keys are skipped without
a word); L88-91 only bf16 and fp8 model weights are accepted (`ValueError: Unsupported dtype`).
"""

from __future__ import annotations

import torch

VERIFIED_BY = (
    "ltx-core 1.0.0 loader.fuse_loras.apply_loras with sd_ops.LTXV_LORA_COMFY_RENAMING_MAP "
    "(each fused delta computed by it in float32 on a zero bfloat16 weight, added to the float32 "
    "base), then the pipeline's velocity compared with the trained adapter's"
)


def available() -> bool:
    """True where ltx-core's loader imports (it is installed without its dependencies)."""
    try:
        import ltx_core.loader.fuse_loras
        import ltx_core.loader.sd_ops  # noqa: F401
    except Exception:  # ImportError, or a missing dependency of ltx-core's package __init__
        return False
    return True


def rename(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The LoRA file's keys as ltx-core's loader sees them (its own renaming map)."""
    from ltx_core.loader.sd_ops import LTXV_LORA_COMFY_RENAMING_MAP

    return {LTXV_LORA_COMFY_RENAMING_MAP.apply_to_key(k): v for k, v in sd.items()}


def fused_deltas(
    lora_sd: dict[str, torch.Tensor],
    shapes: dict[str, torch.Size],
    strength: float = 1.0,
) -> dict[str, torch.Tensor]:
    """{official weight key: the delta ltx-core fuses into it}, for model weights of `shapes`
    (official keys, `…weight`). Computed by ltx-core's `apply_loras` on zero bf16 weights with
    dtype float32: its delta exactly, in float32, whatever the base's dtype."""
    from ltx_core.loader.fuse_loras import apply_loras
    from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict

    zeros = {k: torch.zeros(s, dtype=torch.bfloat16) for k, s in shapes.items()}
    model = StateDict(zeros, torch.device("cpu"), 0, {torch.bfloat16})
    lora = StateDict(rename(lora_sd), torch.device("cpu"), 0, set())
    fused = apply_loras(model, [LoraStateDictWithStrength(lora, strength)], dtype=torch.float32)
    return {k: fused.sd[k] for k in shapes}


def fuse(
    model_sd: dict[str, torch.Tensor],
    lora_sd: dict[str, torch.Tensor],
    strength: float = 1.0,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """ltx-core's `apply_loras` on a bf16 model state dict (official keys), as ltx-pipelines
    calls it: {key: fused weight} for every key (dtype None: bf16, its default)."""
    from ltx_core.loader.fuse_loras import apply_loras
    from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict

    model = StateDict(dict(model_sd), torch.device("cpu"), 0, {torch.bfloat16})
    lora = StateDict(rename(lora_sd), torch.device("cpu"), 0, set())
    return apply_loras(model, [LoraStateDictWithStrength(lora, strength)], dtype=dtype).sd
