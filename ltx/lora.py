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
    # What writes into the audio stream only: the audio self/text attention, the audio
    # feed-forward and the video-to-audio attention (queries from audio): for voice and jingle
    # LoRAs (trainer.strategy=text_to_audio).
    "audio": (
        rf"{_BLOCK}(audio_(attn1|attn2)\.{_PROJ}|video_to_audio_attn\.{_PROJ}"
        r"|audio_ff\.net\.(0\.proj|2))"
    ),
    # Every attention projection and feed-forward of both streams and the cross-modal attention.
    "all": (
        rf"{_BLOCK}((audio_)?(attn1|attn2)\.{_PROJ}|(audio_to_video|video_to_audio)_attn\.{_PROJ}"
        r"|(audio_)?ff\.net\.(0\.proj|2))"
    ),
}
ADAPTER_NAME = "default"
KINDS = ("lora", "dora", "lokr")  # PEFT LoraConfig, LoraConfig(use_dora=True), LoKrConfig
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


AUDIO_WRITERS = r".*\.(audio_attn1|audio_attn2|audio_ff|video_to_audio_attn)\..*"


def audio_only(targets: str) -> str:
    """`targets` restricted to the modules that write into the audio stream (AUDIO_WRITERS)."""
    return rf"(?={AUDIO_WRITERS}$){target_pattern(targets)}"


def for_modality(targets: str, modality: str) -> str:
    """The targets of a run that trains `modality`: both, video (`video_only`) or audio."""
    if modality == "video":
        return video_only(targets)
    return audio_only(targets) if modality == "audio" else targets


def video_only(targets: str) -> str:
    """`targets` without any audio module (audio self/cross-attention and feed-forward, and the
    audio<->video attention: every name holding `audio`), for a run that trains no audio: those
    layers would see no audio tokens, learn nothing and still be exported as keys."""
    return rf"(?!.*audio){target_pattern(targets)}"


def target_modules(transformer: torch.nn.Module, targets: str) -> list[str]:
    """Names of the Linear modules that `targets` selects."""
    pattern = re.compile(target_pattern(targets))
    return [
        name
        for name, module in transformer.named_modules()
        if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name)
    ]


def add_lora(
    transformer: torch.nn.Module,
    rank: int,
    alpha: float,
    dropout: float,
    targets: str,
    kind: str = "lora",
) -> None:
    """Inject a trainable adapter (named `default`) of `kind` into `transformer` in place.

    Every kind starts equal to the base model: LoRA/DoRA with lora_B = 0 (DoRA's magnitude is
    the base weight's row norm), LoKr with lokr_w1 = 0. For LoKr, `dropout` is PEFT's
    `module_dropout` (whole-module dropout) and `rank` bounds the factor w2's rank."""
    from peft import LoKrConfig, LoraConfig

    if kind not in KINDS:
        raise UserError(f"lora kind '{kind}' is not one of {', '.join(KINDS)}")
    if not target_modules(transformer, targets):
        raise UserError(f"lora targets '{targets}' match no Linear module of the transformer")
    if kind == "lokr":
        config = LoKrConfig(
            r=rank,
            alpha=alpha,
            module_dropout=dropout,
            target_modules=target_pattern(targets),
            init_weights=True,
        )
    else:
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=target_pattern(targets),
            init_lora_weights=True,  # lora_B = 0: the adapted model starts equal to the base
            use_dora=kind == "dora",
        )
    transformer.add_adapter(config, adapter_name=ADAPTER_NAME)


def adapter_kind(transformer: torch.nn.Module, adapter_name: str = ADAPTER_NAME) -> str:
    """`lora`, `dora` or `lokr`: what `add_lora` injected."""
    config = transformer.peft_config[adapter_name]
    if type(config).__name__ == "LoKrConfig":
        return "lokr"
    return "dora" if getattr(config, "use_dora", False) else "lora"


def adapter_state_dict(
    transformer: torch.nn.Module, adapter_name: str = ADAPTER_NAME, device: str | None = "cpu"
) -> dict[str, torch.Tensor]:
    """The adapter's weights as `transformer.…lora_A/B.weight`, plus `.alpha` where alpha != r.
    `device` None: where they are (the meta device of a full-size key check, a GPU)."""
    from peft.utils import get_peft_model_state_dict

    config = transformer.peft_config[adapter_name]
    weights = get_peft_model_state_dict(transformer, adapter_name=adapter_name)
    sd = {
        f"transformer.{k}": v.detach().to(device or v.device).contiguous().clone()
        for k, v in weights.items()
    }
    if adapter_kind(transformer, adapter_name) == "lokr":
        return sd  # LoKr's scale alpha / r is in its config (see lokr_to_comfyui)
    for key in [k for k in sd if k.endswith(".lora_A.weight")]:
        module = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
        rank, alpha = _rank_alpha(config, module)
        if alpha != rank:
            base = key.removesuffix(".lora_A.weight")
            sd[base + ALPHA_SUFFIX] = torch.tensor(float(alpha), dtype=torch.float32, device="cpu")
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
    the form `pipe.load_lora_weights` accepts. A LoKr (PEFT or LyCORIS keys), which diffusers
    cannot load, becomes the exactly equal LoRA (`lokr_as_lora`); a ComfyUI DoRA is refused (its
    `dora_scale` follows ComfyUI's normalisation, not PEFT's)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"adapter file not found: {path}")
    sd = load_file(str(path))
    if any(k.rsplit(".", 1)[-1] in _LOKR_FACTORS for k in sd):
        if not is_comfyui(sd):  # our PEFT layout: ComfyUI semantics first (alpha / r folded)
            sd = comfyui_adapter(sd, "lokr", *_lokr_alpha_rank(path))
        return lokr_as_lora(sd)
    if any(k.endswith(COMFY_DORA_SUFFIX) for k in sd):
        # ComfyUI divides by the base weight's row norm, PEFT by the patched one's: the file's
        # dora_scale is not PEFT's magnitude (ltx.comfyui_math), so diffusers would load it wrong.
        raise UserError(
            f"{path} is a ComfyUI DoRA (dora_scale), which only ComfyUI applies exactly: load "
            "the diffusers export (adapter.safetensors) of the same adapter instead"
        )
    if is_comfyui(sd):
        sd = from_comfyui(sd)
    return fold_alpha(_alpha_from_header(path, sd))


def _lokr_alpha_rank(path: Path) -> tuple[float, int]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("lokr_config")
    if raw is None:
        raise UserError(f"{path}: LoKr keys without a `lokr_config` header (alpha and rank)")
    config = json.loads(raw)
    return float(config["alpha"]), int(config["r"])


def lokr_as_lora(comfy: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ComfyUI/LyCORIS LoKr state dict as an exactly equal LoRA in diffusers keys.

    kron(B1 A1, B2 A2) = kron(B1, B2) kron(A1, A2), so with each factor written as B @ A (its
    `_a`/`_b` pair, or the factor and an identity) the update is lora_B @ lora_A with
    lora_B = kron(B1, B2) * scale and lora_A = kron(A1, A2); scale follows ComfyUI
    (alpha / dim for decomposed factors, else 1). The rank is r1 * r2: larger than the LoKr's
    parameter count, but loadable by `pipe.load_lora_weights` and equal in output."""
    out: dict[str, torch.Tensor] = {}
    for module, parts in comfyui_modules(comfy).items():
        b1, a1, dim1 = _lora_factors(parts, "lokr_w1")
        b2, a2, dim2 = _lora_factors(parts, "lokr_w2")
        dim = dim2 or dim1
        scale = float(parts["alpha"]) / dim if "alpha" in parts and dim else 1.0
        out[f"transformer.{module}.lora_B.weight"] = torch.kron(b1, b2) * scale
        out[f"transformer.{module}.lora_A.weight"] = torch.kron(a1, a2)
    return out


def _lora_factors(
    parts: dict[str, torch.Tensor], name: str
) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """(B, A, rank of a decomposed factor or None) with B @ A = the LoKr factor `name`."""
    if f"{name}_a" in parts:
        b, a = parts[f"{name}_a"].float(), parts[f"{name}_b"].float()
        return b, a, a.shape[0]
    w = parts[name].float()
    rows, cols = w.shape
    if rows <= cols:
        return torch.eye(rows, device=w.device), w, None
    return w, torch.eye(cols, device=w.device), None


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
    kind = adapter_kind(transformer, adapter_name)
    lokr = kind == "lokr"
    return {
        "kind": kind,
        "rank": config.r,
        "alpha": config.alpha if lokr else config.lora_alpha,
        "dropout": config.module_dropout if lokr else config.lora_dropout,
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
    return sum(p.numel() for n, p in transformer.named_parameters() if "lora_" in n or "lokr_" in n)


# ------------------------------------------------------------- ComfyUI layouts of DoRA and LoKr

DORA_SUFFIX = ".lora_magnitude_vector"  # PEFT: the per-output-row magnitude m [out]
COMFY_DORA_SUFFIX = ".dora_scale"  # ComfyUI / LyCORIS: the same m as [out, 1]
_LOKR_FACTORS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")


def comfyui_adapter(sd: dict[str, torch.Tensor], kind: str, alpha: float, rank: int):
    """`adapter_state_dict` output -> ComfyUI keys (`diffusion_model.…`) for any kind.

    DoRA: `lora_magnitude_vector` [out] becomes `dora_scale` [out, 1] (ComfyUI's
    `weight_decompose` normalises per output row when dora_scale.shape[0] == out, as PEFT does).
    LoKr: LyCORIS keys `lokr_w1` / `lokr_w2` (or their `_a`/`_b` factors). ComfyUI scales by
    alpha / dim only where a factor is decomposed (dim = its rank) and by 1 otherwise, while PEFT
    scales by alpha / r always: with full factors alpha / r is folded into `lokr_w2` and no
    `alpha` key is written; with a decomposed w2 (dim = r) `alpha` is written as it is."""
    from ltx.lora_keys import to_comfyui

    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.endswith(DORA_SUFFIX):
            out[key.removesuffix(DORA_SUFFIX) + COMFY_DORA_SUFFIX] = value.reshape(-1, 1)
        else:
            out[key] = value
    if kind == "lokr":
        for base in sorted(
            {k.rsplit(".", 1)[0] for k in sd if k.rsplit(".", 1)[1] in _LOKR_FACTORS}
        ):
            decomposed = any(f"{base}.{f}_a" in sd for f in ("lokr_w1", "lokr_w2"))
            if decomposed:
                out[f"{base}{ALPHA_SUFFIX}"] = torch.tensor(float(alpha))
            else:
                w2 = out[f"{base}.lokr_w2"]
                out[f"{base}.lokr_w2"] = (w2.float() * (alpha / rank)).to(w2.dtype)
    return to_comfyui(out)


def comfyui_modules(sd: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """ComfyUI adapter keys grouped by transformer module (diffusers names, no prefix)."""
    from ltx.lora_keys import from_comfyui

    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in from_comfyui(sd).items():
        module = key.removeprefix("transformer.")
        for part in ("lora_A.weight", "lora_B.weight", "alpha", "dora_scale", *_LOKR_FACTORS):
            if module.endswith("." + part):
                grouped.setdefault(module.removesuffix("." + part), {})[part] = value
                break
        else:
            raise UserError(f"adapter key '{key}' is not a LoRA, DoRA or LoKr entry")
    return grouped
