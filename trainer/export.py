"""Adapter export in two layouts, each verified by loading it back.

- `adapter.safetensors`: diffusers/PEFT keys (`transformer.…lora_A.weight`). diffusers 0.42.1
  rejects `.alpha` keys, so alpha travels in its own `lora_adapter_metadata` header entry, which
  `LTX2Pipeline.load_lora_weights` reads. DoRA adds `lora_magnitude_vector`; LoKr is written in
  PEFT's layout (`lokr_w1`/`lokr_w2`, config in the `lokr_config` header), which diffusers
  cannot load, and is verified through PEFT.
- `comfyui.safetensors`: ComfyUI keys (`diffusion_model.…`) with `.alpha` where alpha ≠ rank;
  DoRA as `dora_scale`, LoKr as LyCORIS `lokr_w1`/`lokr_w2`.
Both carry the DESIGN.md metadata header plus `adapter_kind` and `verified_by` (how the file was
checked), and the same bytes for the same weights. An adapter trained on a quantised base
(`model.quantize`) has the same keys and header, plus `base_quantization` naming the format; it is
verified on that same quantised base (`match_base`), not on the float one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ltx.lora import (
    ADAPTER_NAME,
    ALPHA_SUFFIX,
    adapter_metadata,
    adapter_state_dict,
    comfyui_adapter,
    comfyui_modules,
    comfyui_weight,
    diffusers_metadata_header,
)
from stagekit.hashing import sha256_file
from trainer.data import Batch
from trainer.quantize import BACKENDS, dequantized_weight, quantization_of, quantized_modules

DIFFUSERS_FILE = "adapter.safetensors"
COMFYUI_FILE = "comfyui.safetensors"
LOKR_CONFIG_KEY = "lokr_config"
QUANTIZATION_KEY = "base_quantization"  # only in adapters trained on a quantised base


# How each (kind, layout) is checked by loading; written into the file's header.
VERIFIED_BY = {
    ("lora", "diffusers"): "LTX2Pipeline.load_lora_weights(path)",
    ("dora", "diffusers"): "LTX2Pipeline.load_lora_weights(path)",
    ("lokr", "peft"): (
        "peft LoKrConfig from the header + set_peft_model_state_dict "
        "(diffusers 0.42.1 load_lora_weights cannot load LoKr)"
    ),
    ("lora", "comfyui"): "keys converted back, LTX2Pipeline.load_lora_weights",
    ("dora", "comfyui"): (
        "merged with ComfyUI's weight-adapter arithmetic re-implemented in ltx.lora "
        "(not run inside ComfyUI)"
    ),
    ("lokr", "comfyui"): (
        "merged with ComfyUI's LyCORIS lokr arithmetic re-implemented in ltx.lora "
        "(not run inside ComfyUI)"
    ),
}


def export_adapter(
    transformer: torch.nn.Module, dest: Path, metadata: dict[str, str], stem: str = "adapter"
) -> list[Path]:
    """Write `<stem>.safetensors` (diffusers, or PEFT for LoKr) and its ComfyUI twin into
    `dest/`."""
    dest.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu").contiguous() for k, v in adapter_state_dict(transformer).items()
    }
    plain = {k: v for k, v in state.items() if not k.endswith(ALPHA_SUFFIX)}
    meta = adapter_metadata(transformer)
    kind = meta["kind"]
    layout = "peft" if kind == "lokr" else "diffusers"
    # adapter → comfyui, adapter_ema → comfyui_ema
    files = [
        dest / f"{stem}.safetensors",
        dest / f"comfyui{stem.removeprefix('adapter')}.safetensors",
    ]
    header = _lokr_header(transformer) if kind == "lokr" else _inference_header(transformer)
    quantized, on_base = _quantization_header(transformer)
    save_file(
        plain,
        files[0],
        metadata={
            **metadata,
            **header,
            **quantized,
            "format": layout,
            "adapter_kind": kind,
            "verified_by": VERIFIED_BY[(kind, layout)] + on_base,
        },
    )
    comfy = comfyui_adapter(state, kind, float(meta["alpha"]), int(meta["rank"]))
    save_file(
        comfy,
        files[1],
        metadata={
            **metadata,
            **quantized,
            "format": "comfyui",
            "adapter_kind": kind,
            "verified_by": VERIFIED_BY[(kind, "comfyui")] + on_base,
        },
    )
    for f in files:
        canonical_header(f)
    return files


def _quantization_header(transformer: torch.nn.Module) -> tuple[dict[str, str], str]:
    """The `base_quantization` entry and the `verified_by` suffix of an adapter trained on a
    quantised base; nothing for a float base (its files stay as they were)."""
    kind = quantization_of(transformer)
    if kind == "none":
        return {}, ""
    return {QUANTIZATION_KEY: kind}, (
        f"; on the base as trained: {kind}-quantised by {BACKENDS[kind]}, its dequantised "
        "weights in the pipeline"
    )


def _lokr_header(transformer: torch.nn.Module) -> dict[str, str]:
    """The LoKrConfig, so the PEFT file can be loaded back (`load_lokr`)."""
    config = transformer.peft_config[ADAPTER_NAME].to_dict()
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    return {LOKR_CONFIG_KEY: json.dumps(config, sort_keys=True, default=str)}


def _inference_header(transformer: torch.nn.Module) -> dict[str, str]:
    """diffusers' LoRA config header with dropout 0: diffusers injects the layers in training
    mode, so a header dropout would randomly drop activations at inference (seen in 0.42.1)."""
    header = diffusers_metadata_header(transformer)
    ((key, raw),) = header.items()
    config = json.loads(raw)
    config["transformer.lora_dropout"] = 0.0
    return {key: json.dumps(config, indent=2, sort_keys=True)}


def verify_export(
    pipe, trained: torch.nn.Module, files: list[Path], batch: Batch
) -> dict[str, str]:
    """Load each file into the pipeline the way its consumers do and check the denoiser then
    predicts what the in-memory adapter predicts (and not what the base predicts).

    Compared at the velocity output on a real training batch, where float precision shows even
    a few steps of training. A quantised `trained` base is first copied into the pipeline
    (`match_base`), so the comparison holds the base fixed and tests the adapter alone, at the
    same tolerance as a float run. Returns {file name: sha256}.
    """
    match_base(pipe.transformer, trained)
    probe = _probe(pipe, batch)
    base, ours = probe(pipe.transformer), probe(trained)
    if torch.equal(base, ours):
        raise RuntimeError("export check failed: the trained adapter does not change the output")
    for f in files:
        with _loaded(pipe, f):
            got = probe(pipe.transformer)
        if not torch.allclose(got, ours, rtol=1e-4, atol=1e-5):
            err = (got - ours).abs().max().item()
            raise RuntimeError(
                f"export check failed: {f.name} loaded into the pipeline predicts "
                f"differently from the in-memory adapter (max |diff| {err:.3g})"
            )
    return {f.name: sha256_file(f) for f in files}


def match_base(target: torch.nn.Module, trained: torch.nn.Module) -> int:
    """Write the weights a quantised `trained` base computes with (dequantised, exactly) into
    the float `target`'s Linear layers of the same names, in place: the export check's own
    pipeline then holds the base the adapter was trained against. Returns the layers written
    (0 for a float base)."""
    layers = quantized_modules(trained)
    with torch.no_grad():
        for name, module in layers.items():
            linear = target.get_submodule(name)
            weight = dequantized_weight(module)
            if linear.weight.shape != weight.shape:
                raise RuntimeError(
                    f"export check: {name} is {tuple(linear.weight.shape)} in "
                    f"the pipeline but {tuple(weight.shape)} as trained"
                )
            linear.weight.copy_(weight.to(linear.weight.device, linear.weight.dtype))
    return len(layers)


def _probe(pipe, batch: Batch):
    """Video velocity [B, C, F, H, W] for fixed noise at σ = 0.5, as a function of the
    transformer used."""
    from ltx.forward import noisy_latents, predict_velocity

    g = torch.Generator().manual_seed(0)
    sigma = torch.full((batch.video.shape[0],), 0.5)
    x_v = noisy_latents(batch.video, torch.randn(batch.video.shape, generator=g), sigma)[0]
    x_a = (
        None
        if batch.audio is None
        else noisy_latents(batch.audio, torch.randn(batch.audio.shape, generator=g), sigma)[0]
    )

    @torch.no_grad()
    def run(transformer: torch.nn.Module) -> torch.Tensor:
        denoiser = {"transformer": transformer, "connectors": pipe.connectors}
        return predict_velocity(denoiser, x_v, x_a, batch.text, sigma, sigma, fps=batch.fps)[0]

    return run


@contextmanager
def _loaded(pipe, path: Path) -> Iterator[None]:
    """Load `path` into `pipe.transformer` the way its consumers would, per its header:
    diffusers files through plain `load_lora_weights(path)`; a LoKr PEFT file through PEFT;
    a ComfyUI LoRA converted back and loaded by diffusers; ComfyUI DoRA / LoKr merged into the
    weights with ComfyUI's arithmetic (restored after)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    layout, kind = header.get("format"), header.get("adapter_kind", "lora")
    if layout == "peft":
        with load_lokr(pipe.transformer, path):
            yield
        return
    if layout == "comfyui" and kind != "lora":
        with comfyui_merged(pipe.transformer, load_file(str(path))):
            yield
        return
    from ltx.lora import load_adapter_file

    source = str(path) if layout == "diffusers" else load_adapter_file(path)
    pipe.load_lora_weights(source, adapter_name="export-check")
    try:
        yield
    finally:
        pipe.unload_lora_weights()


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
    """The transformer with a ComfyUI adapter merged into its Linear weights, as ComfyUI
    patches a model; the original weights come back after."""
    saved = {}
    with torch.no_grad():
        for module, parts in comfyui_modules(sd).items():
            linear = transformer.get_submodule(module)
            saved[module] = linear.weight.detach().clone()
            linear.weight.copy_(comfyui_weight(linear.weight, parts))
    try:
        yield
    finally:
        with torch.no_grad():
            for module, weight in saved.items():
                transformer.get_submodule(module).weight.copy_(weight)


def canonical_header(path: Path) -> None:
    """Rewrite a safetensors header with sorted keys, same length: the same weights and
    metadata then give the same bytes (safetensors writes metadata in hash-map order), so
    an adapter's sha256 identifies it."""
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":"))
    raw = header.encode()
    if len(raw) > n:
        raise RuntimeError(f"{path}: canonical header longer than the original")
    data[8 : 8 + n] = raw + b" " * (n - len(raw))  # keep tensor offsets where they were
    path.write_bytes(bytes(data))
