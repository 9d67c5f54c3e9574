"""LoRA on the LTX-2 transformer: target presets, injection, and adapter state dicts.

Saved layout (diffusers/PEFT): `transformer.<module>.lora_A.weight` [r, in],
`transformer.<module>.lora_B.weight` [out, r], plus a scalar `transformer.<module>.alpha`
wherever alpha != r (the kohya/ComfyUI convention: the update is B @ A * alpha / r).

`LTX2Pipeline.load_lora_weights` (diffusers 0.42.1) rejects `.alpha` keys. It takes alpha from
the file's `lora_adapter_metadata` header when there is one (`diffusers_metadata_header`), else
assumes alpha == r; `fold_alpha` turns a state dict into the header-free form it loads with
identical outputs (lora_B scaled by alpha / r). `load_adapter_file` reads every layout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ltx.lora_keys import from_comfyui, is_comfyui
from stagekit.errors import UserError

_PROJ = r"(to_q|to_k|to_v|to_out\.0)"
_BLOCK = r"transformer_blocks\.\d+\."
# PEFT full-matches a string `target_modules` against each module name inside the transformer.
TARGETS: dict[str, str] = {
    # Video self-attention (attn1) and video-text cross-attention (attn2) only: bare
    # to_q/... names would also catch audio_attn*, audio_to_video_attn and video_to_audio_attn.
    "video_attention": rf"{_BLOCK}(attn1|attn2)\.{_PROJ}",
    "video_attention_ff": rf"{_BLOCK}((attn1|attn2)\.{_PROJ}|ff\.net\.(0\.proj|2))",
    # Every attention projection and feed-forward of both streams and the cross-modal attention.
    "all": (
        rf"{_BLOCK}((audio_)?(attn1|attn2)\.{_PROJ}|(audio_to_video|video_to_audio)_attn\.{_PROJ}"
        r"|(audio_)?ff\.net\.(0\.proj|2))"
    ),
}
ADAPTER_NAME = "default"
LORA_METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
ALPHA_SUFFIX = ".alpha"


def target_pattern(targets: str) -> str:
    """A preset name from TARGETS, or a raw regex (full-matched against module names)."""
    pattern = TARGETS.get(targets, targets)
    try:
        re.compile(pattern)
    except re.error as e:
        raise UserError(
            f"lora targets '{targets}' is neither a preset ({', '.join(TARGETS)}) "
            f"nor a valid regex: {e}"
        ) from e
    return pattern


def target_modules(transformer: torch.nn.Module, targets: str) -> list[str]:
    """Names of the Linear modules that `targets` selects."""
    pattern = re.compile(target_pattern(targets))
    return [
        name
        for name, module in transformer.named_modules()
        if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name)
    ]


def add_lora(
    transformer: torch.nn.Module, rank: int, alpha: float, dropout: float, targets: str
) -> None:
    """Inject a trainable LoRA adapter (named `default`) into `transformer` in place."""
    from peft import LoraConfig

    if not target_modules(transformer, targets):
        raise UserError(f"lora targets '{targets}' match no Linear module of the transformer")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_pattern(targets),
        init_lora_weights=True,  # lora_B = 0: the adapted model starts equal to the base
    )
    transformer.add_adapter(config, adapter_name=ADAPTER_NAME)


def adapter_state_dict(
    transformer: torch.nn.Module, adapter_name: str = ADAPTER_NAME
) -> dict[str, torch.Tensor]:
    """The adapter's weights as `transformer.…lora_A/B.weight`, plus `.alpha` where alpha != r."""
    from peft.utils import get_peft_model_state_dict

    config = transformer.peft_config[adapter_name]
    weights = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    sd = {f"transformer.{k}": v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    for key in [k for k in sd if k.endswith(".lora_A.weight")]:
        module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
        rank, alpha = _rank_alpha(config, module)
        if alpha != rank:
            base = key.removesuffix(".lora_A.weight")
            sd[base + ALPHA_SUFFIX] = torch.tensor(float(alpha), dtype=torch.float32)
    return sd


def _rank_alpha(config: object, module: str) -> tuple[int, float]:
    return (
        _pattern_value(config.rank_pattern, module, config.r),
        _pattern_value(config.alpha_pattern, module, config.lora_alpha),
    )


def _pattern_value(patterns: dict | None, module: str, default: float) -> float:
    # PEFT's rule (peft.utils.other.get_pattern_key): a key matches a module-name suffix.
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def fold_alpha(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Scale each lora_B by alpha / r and drop `.alpha` keys (what diffusers' loader accepts)."""
    out = {k: v for k, v in sd.items() if not k.endswith(ALPHA_SUFFIX)}
    for key, alpha in sd.items():
        if not key.endswith(ALPHA_SUFFIX):
            continue
        base = key.removesuffix(ALPHA_SUFFIX)
        a_key, b_key = f"{base}.lora_A.weight", f"{base}.lora_B.weight"
        if a_key not in sd or b_key not in sd:
            raise UserError(f"adapter has {key} but no {a_key} / {b_key}")
        rank = sd[a_key].shape[0]
        b = sd[b_key]
        out[b_key] = (b.float() * (float(alpha) / rank)).to(b.dtype)
    return out


def load_adapter_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a LoRA safetensors file (diffusers or ComfyUI keys, with or without `.alpha`) in
    the form `pipe.load_lora_weights` accepts."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"adapter file not found: {path}")
    sd = load_file(str(path))
    if is_comfyui(sd):
        sd = from_comfyui(sd)
    return fold_alpha(_alpha_from_header(path, sd))


def _alpha_from_header(path: Path, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add `.alpha` entries from a diffusers `lora_adapter_metadata` header, if the file has
    one, for the modules that have no `.alpha` key of their own."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(LORA_METADATA_KEY)
    if not raw:
        return sd
    meta = json.loads(raw)
    if "transformer.lora_alpha" not in meta:
        return sd
    alpha, patterns = meta["transformer.lora_alpha"], meta.get("transformer.alpha_pattern")
    out = dict(sd)
    for key in sd:
        base = key.removesuffix(".lora_A.weight")
        if key.endswith(".lora_A.weight") and base + ALPHA_SUFFIX not in sd:
            module = base.removeprefix("transformer.")
            value = _pattern_value(patterns, module, alpha)
            out[base + ALPHA_SUFFIX] = torch.tensor(float(value))
    return out


def adapter_metadata(transformer: torch.nn.Module, adapter_name: str = ADAPTER_NAME) -> dict:
    """rank / alpha / targets of an adapter, for safetensors headers and registries."""
    config = transformer.peft_config[adapter_name]
    targets = config.target_modules
    return {
        "rank": config.r,
        "alpha": config.lora_alpha,
        "dropout": config.lora_dropout,
        "targets": targets if isinstance(targets, str) else sorted(targets),
    }


def diffusers_metadata_header(
    transformer: torch.nn.Module, adapter_name: str = ADAPTER_NAME
) -> dict[str, str]:
    """safetensors header entry with the adapter's LoraConfig (as diffusers' own
    `save_lora_weights` writes it): with it, a file *without* `.alpha` keys and with unscaled
    lora_B loads through plain `pipe.load_lora_weights(path)` at the right alpha."""
    config = transformer.peft_config[adapter_name].to_dict()
    packed = {f"transformer.{k}": sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    return {LORA_METADATA_KEY: json.dumps(packed, indent=2, sort_keys=True, default=str)}


def count_lora_parameters(transformer: torch.nn.Module) -> int:
    """Number of LoRA parameters (trainable adapter weights) in `transformer`."""
    return sum(p.numel() for n, p in transformer.named_parameters() if "lora_" in n)
