"""ComfyUI's LoRA / DoRA / LoKr patching arithmetic, written from its code, for checking exports.

ComfyUI does not install here (it is an application, not a package), so the export check and the
tests run this transcription of what its code does. Sources (github.com/comfyanonymous/ComfyUI):
- `comfy/model_patcher.py` `patch_weight_to_device`: the stored weight is cast to float32
  (`cast_to_device(weight, device_to, torch.float32, copy=True)`) before `calculate_weight`,
  then rounded back to the stored dtype by `comfy.float.stochastic_rounding` (here: to nearest,
  which differs by at most one ulp of a bf16 / fp16 weight; float32 weights are not rounded).
- `comfy/lora.py` (41444b5) `load_lora` L36-46: per module `x`, `{x}.alpha` (a scalar, `.item()`)
  and `{x}.dora_scale` are read beside the weights; `model_lora_keys_unet`: every model weight
  `diffusion_model.<name>.weight` is reachable as the LoRA module key `diffusion_model.<name>`.
- `comfy/weight_adapter/lora.py` (6fd406f) L110-112: `lora_B` is `mat1` (up), `lora_A` is `mat2`
  (down); L174-177: alpha = `.alpha` / mat2.shape[0] (the rank), else 1.0; L194-196: diff =
  mat1 @ mat2; L198: DoRA through `weight_decompose`; L209: else weight += strength·alpha·diff;
  L210-211: an exception is logged, not raised (a bad file patches nothing, silently).
- `comfy/weight_adapter/lokr.py` (e8f3bc5) L98-116: w1 = w1_a @ w1_b or w1, w2 = w2_a @ w2_b or
  w2, `dim` = the rank of the decomposed factor (w2's if both); L120-123: alpha = `.alpha` / dim
  only when a factor is decomposed and `.alpha` is given, else 1.0; L126: diff = kron(w1, w2).
- `comfy/weight_adapter/base.py` (9c0cf36) `weight_decompose` L62-90: diff *= alpha; weight_calc =
  weight + diff; when dora_scale.shape[0] == out (L67) the norm is the row norm of the ORIGINAL
  weight (L69-73), else the column norm of weight_calc (L75-81); eps of the weight's dtype is added
  (L82); weight_calc *= dora_scale / norm (L84); strength ≠ 1 blends weight + s·(calc − weight).
"""

from __future__ import annotations

import torch

_LOKR = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")


def patched_weight(
    weight: torch.Tensor, parts: dict[str, torch.Tensor], strength: float = 1.0
) -> torch.Tensor:
    """One Linear weight [out, in] after ComfyUI patches it with one module's adapter entries
    (`lora_A.weight`, `lora_B.weight`, `alpha`, `dora_scale`, `lokr_*`), in the stored dtype."""
    w = weight.to(torch.float32, copy=True)  # model_patcher: calculate_weight runs on float32
    if any(k in parts for k in _LOKR):
        diff, alpha = _lokr_diff(parts)
    else:
        mat1, mat2 = parts["lora_B.weight"].float(), parts["lora_A.weight"].float()
        alpha = float(parts["alpha"]) / mat2.shape[0] if "alpha" in parts else 1.0
        diff = (mat1.flatten(1) @ mat2.flatten(1)).reshape(w.shape)
    if "dora_scale" in parts:
        out = _weight_decompose(parts["dora_scale"].float(), w, diff, alpha, strength)
    else:
        out = w + (strength * alpha) * diff
    return out.to(weight.dtype)


def _lokr_diff(parts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    dim = None
    if "lokr_w1" in parts:
        w1 = parts["lokr_w1"].float()
    else:
        dim = parts["lokr_w1_b"].shape[0]
        w1 = parts["lokr_w1_a"].float() @ parts["lokr_w1_b"].float()
    if "lokr_w2" in parts:
        w2 = parts["lokr_w2"].float()
    else:
        dim = parts["lokr_w2_b"].shape[0]
        w2 = parts["lokr_w2_a"].float() @ parts["lokr_w2_b"].float()
    alpha = float(parts["alpha"]) / dim if "alpha" in parts and dim is not None else 1.0
    return torch.kron(w1, w2), alpha


def _weight_decompose(
    dora_scale: torch.Tensor,
    weight: torch.Tensor,
    diff: torch.Tensor,
    alpha: float,
    strength: float,
) -> torch.Tensor:
    calc = weight + diff * alpha
    if dora_scale.shape[0] == calc.shape[0]:  # on the output axis: the base weight's row norm
        norm = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True)
    else:  # on the input axis: the patched weight's column norm
        norm = calc.transpose(0, 1).reshape(calc.shape[1], -1).norm(dim=1, keepdim=True).T
    norm = norm + torch.finfo(weight.dtype).eps
    calc = calc * (dora_scale / norm)
    if strength != 1.0:
        return weight + strength * (calc - weight)
    return calc


def modules(sd: dict[str, torch.Tensor], prefix: str = "diffusion_model.") -> dict[str, dict]:
    """ComfyUI-layout adapter entries grouped by module key (official name, prefix removed), as
    `load_lora` groups them: `{x}.lora_A.weight`, `{x}.alpha`, `{x}.dora_scale`, `{x}.lokr_*`."""
    parts = ("lora_A.weight", "lora_B.weight", "alpha", "dora_scale", *_LOKR)
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        for part in parts:
            if key.startswith(prefix) and key.endswith("." + part):
                module = key.removeprefix(prefix).removesuffix("." + part)
                grouped.setdefault(module, {})[part] = value
                break
        else:
            raise KeyError(f"{key}: not an entry ComfyUI's load_lora reads for this model")
    return grouped
