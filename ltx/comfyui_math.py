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

`guide_positions` transcribes where ComfyUI's `LTXVAddGuide` puts IC-LoRA guides appended at
frame_idx 0 (strength 1), for comparing with `ltx.conditioning.reference_coords`. Sources:
`comfy_extras/nodes_lt.py` at 085a1a9 (the stored version with `Get IC-LoRA Parameters`; at
eb0686b, 2026-04-03, the core node had no downscale input), and at eb0686b (read from a mirror
holding upstream's history) `comfy/ldm/lightricks/symmetric_patchifier.py`, `model.py`,
`av_model.py`, `comfy/model_base.py`:
- nodes_lt L46-55, L306-313: the factor N is `reference_downscale_factor` from the LoRA's
  metadata, rounded, at least 1; L417-423: the target's latent H and W must be multiples of N.
- nodes_lt L280-288: the guide is resized to the target's pixel size / N and VAE-encoded (a
  video is cut to 8k+1 frames, L282); L443-446 + `dilate_latent` L291-303: for N > 1 the
  [F, H/N, W/N] latent is spread over a zero [F, H, W] grid at [::N, ::N], with a mask of 1 there
  and -1 on the filler.
- nodes_lt L426-432: frame_idx 0 (or a one-frame guide) means causal_fix; L316-326 keeps
  frame_idx 0 at 0. `add_keyframe_index` L329-353: the dilated grid's coordinates (patchify,
  L331), scaled to pixels with causal_fix (L334), + frame_idx on time (L335), then the h/w END
  coordinate + (N - 1) * scale (L343-347), concatenated after earlier guides' (L349-352).
- nodes_lt `append_keyframe` L372 / L374-379: the guide's noise mask is mask - strength (filler:
  -1 - 1 < 0) or 1 - strength; L385-386: latent and mask go after the existing frames, so
  guides follow the target, and each other, in the order they are added.
- symmetric_patchifier L63-94, L98-111: tokens in (f, h, w) raster order, coordinates
  [start, start + 1] per axis (patch 1); L24-33: × (8, 32, 32), and with causal_fix the scaled
  time x becomes (x + 1 - 8).clamp(min=0): pixel frames.
- model.py `LTXVModel._process_input` L1020-1071 (av_model L678-680 uses it for the video):
  tokens whose patchified denoise mask is < 0 are dropped (L1032-1037), the guides' kept
  coordinates overwrite the last tokens' (L1039, L1065-1066); L1044-1063 count each guide's
  kept tokens. `_prepare_positional_embeddings` L838-841 (av_model L846-848): float32, time
  × (1.0 / frame_rate), frame_rate from the conditioning, default 25 (model_base L1036).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def guide_positions(
    guides: Sequence[tuple[int, int, int]],
    factor: int,
    fps: float,
    scale: tuple[int, int, int] = (8, 32, 32),
) -> tuple[torch.Tensor, list[int]]:
    """Positions [1, 3, tokens, 2] (seconds, pixels; our `reference_coords` convention) that
    ComfyUI gives IC-LoRA guides of latent size (frames, H/N, W/N) added in turn by
    `LTXVAddGuide` at frame_idx 0, and how many tokens each keeps once filler is dropped."""
    coords, kept = [], []
    for frames, height, width in guides:
        grid, keep = _dilated_guide(frames, height, width, factor, scale)
        coords.append(grid[:, :, keep])  # masking each guide = masking their concatenation
        kept.append(int(keep.sum()))
    out = torch.cat(coords, dim=2).to(torch.float32)
    # Units: ComfyUI's keyframe_idxs hold time in pixel frames (nodes_lt L334-335) until the
    # RoPE casts to float32 and multiplies by 1 / frame_rate (model.py L840-841); ours hold
    # seconds, so do the same. Diffusers divides by fps instead: one float32 step apart at most.
    # Height and width are pixels on both sides: no conversion.
    out[:, 0] = out[:, 0] * (1.0 / fps)
    return out, kept


def _dilated_guide(
    frames: int, height: int, width: int, factor: int, scale: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`keyframe_idxs` [1, 3, F*H*N*W*N, 2] of one guide on its dilated grid (pixel frames and
    pixels, as nodes_lt L329-347 computes them) and which of its tokens are real."""
    axes = (torch.arange(frames), torch.arange(height * factor), torch.arange(width * factor))
    start = torch.stack(torch.meshgrid(*axes, indexing="ij")).flatten(1)  # [3, tokens], f h w
    coords = torch.stack([start, start + 1], dim=-1)[None] * torch.tensor(scale).view(1, 3, 1, 1)
    coords[:, 0] = (coords[:, 0] + 1 - scale[0]).clamp(min=0)  # causal_fix: frame_idx 0
    coords[:, 1:, :, 1] += (factor - 1) * torch.tensor(scale[1:]).view(1, 2, 1)
    keep = (start[1] % factor == 0) & (start[2] % factor == 0)  # dilate_latent's mask of 1
    return coords, keep
