"""Adapter export: one file per consumer, each checked by that consumer's own arithmetic.

What each consumer gets per adapter kind is `ltx.exports.TABLE` (docs/exports.md is generated
from it): `adapter.safetensors` for diffusers (and the in-house API), `comfyui.safetensors` for
ComfyUI, `ltx-pipelines.safetensors` for Lightricks' ltx-pipelines / ltx-core. A refused cell
writes no file; `exports.json` says why and what to choose instead. When diffusers is refused (a
LoKr whose equal LoRA is larger than its dense update), `adapter.safetensors` is still written,
in PEFT's LoKr layout (`format: peft`): it is the registry's identity of the adapter.

Every file carries the DESIGN.md metadata header plus `consumer`, `adapter_kind`,
`export_outcome` and `verified_by`: the consumer arithmetic `verify_export` runs on it before the
run is kept (a failure raises, so a written header's claim has been checked). An adapter
trained on a quantised base (`model.quantize`) also has `base_quantization` and is verified on
that same quantised base (`match_base`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ltx import ltx_core_fuse
from ltx.consumer_files import BaseWeight, ExportRefused, consumer_state
from ltx.exports import CONSUMERS, EXPORTS_RECORD, file_name, outcome
from ltx.lora import ADAPTER_NAME, adapter_kind, adapter_state_dict, diffusers_metadata_header
from stagekit.files import write_json
from stagekit.hashing import sha256_file
from trainer.data import Batch
from trainer.export_consumers import (
    LOKR_CONFIG_KEY,
    comfyui_merged,
    load_lokr,
    ltx_core_fused,
)
from trainer.quantize import BACKENDS, dequantized_weight, quantization_of, quantized_modules

DIFFUSERS_FILE = "adapter.safetensors"
COMFYUI_FILE = "comfyui.safetensors"
LTX_PIPELINES_FILE = "ltx-pipelines.safetensors"
QUANTIZATION_KEY = "base_quantization"  # only in adapters trained on a quantised base
BASE_NORMS_KEY = "base_weight_norms"  # {module: ‖W‖_F}: the registry's "below noise" check

_CHECKED = "; the pipeline's velocity then compared with the trained adapter's"
PEFT_LOKR_CHECK = (
    "peft LoKrConfig from the header + set_peft_model_state_dict (no consumer: diffusers and "
    "ltx-pipelines were refused this LoKr, see exports.json)" + _CHECKED
)


def verified_by(consumer: str) -> str:
    """The consumer arithmetic `verify_export` runs on `consumer`'s file, in words."""
    if consumer == "diffusers":
        import diffusers

        return f"diffusers {diffusers.__version__} LTX2Pipeline.load_lora_weights(path)" + _CHECKED
    if consumer == "comfyui":
        return (
            "ComfyUI's patching arithmetic (weight_adapter lora.py / lokr.py / base.py "
            "weight_decompose, model_patcher float32 cast) as transcribed in ltx.comfyui_math, "
            "not run inside ComfyUI" + _CHECKED
        )
    if ltx_core_fuse.available():
        return ltx_core_fuse.VERIFIED_BY
    return "ltx-core's fuse arithmetic (B·strength @ A) as transcribed in trainer.export, " + (
        "ltx-core not importable here" + _CHECKED
    )


def export_adapter(
    transformer: torch.nn.Module, dest: Path, metadata: dict[str, str], stem: str = "adapter"
) -> list[Path]:
    """Write each consumer's file for the adapter in `transformer` into `dest/`, plus
    `exports.json` (`exports_ema.json` for stem `adapter_ema`). Returns the files written,
    the diffusers one (or PEFT LoKr) first."""
    dest.mkdir(parents=True, exist_ok=True)
    kind = adapter_kind(transformer)
    base_weight = _base_weights(transformer)
    quantized, on_base = _quantization_header(transformer)
    common = {k: v for k, v in {**metadata, **quantized}.items() if k not in CONSUMER_ONLY}
    common["adapter_kind"] = kind
    common[BASE_NORMS_KEY] = _base_norms(transformer, base_weight)
    files, record = [], {}
    for consumer in ("diffusers", *[c for c in CONSUMERS if c != "diffusers"]):
        path = dest / file_name(consumer, stem)
        try:
            sd = consumer_state(transformer, consumer, base_weight)
        except ExportRefused as refused:
            record[consumer] = {"outcome": "refused", "reason": str(refused)}
            if consumer == "diffusers":
                files.append(_write_peft_lokr(transformer, path, common, on_base))
            continue
        header = {
            **common,
            **_read_only_by(consumer, metadata),
            **_consumer_header(transformer, consumer),
            "consumer": consumer,
            "export_outcome": outcome(kind, consumer).result,
            "verified_by": verified_by(consumer) + on_base,
        }
        _save(sd, path, header)
        files.append(path)
        record[consumer] = {"file": path.name, "outcome": header["export_outcome"]}
        record[consumer]["verified_by"] = header["verified_by"]
    write_json(dest / _record_name(stem), {"adapter_kind": kind, "consumers": record})
    return files


def _record_name(stem: str) -> str:
    return EXPORTS_RECORD.replace(".json", f"{stem.removeprefix('adapter')}.json")


def _save(sd: dict[str, torch.Tensor], path: Path, header: dict[str, str]) -> None:
    save_file({k: v.detach().to("cpu").contiguous() for k, v in sd.items()}, path, header)
    canonical_header(path)


def _write_peft_lokr(
    transformer: torch.nn.Module, path: Path, common: dict[str, str], on_base: str
) -> Path:
    """The LoKr in PEFT's layout: the registry's identity when no consumer file is diffusers'."""
    header = {**common, **_lokr_header(transformer), "format": "peft", "consumer": "none"}
    header["verified_by"] = PEFT_LOKR_CHECK + on_base
    _save(adapter_state_dict(transformer), path, header)
    return path


# Header keys written only into the files of the consumers that read them (Lightricks/LTX-2 at
# 400fd31, ComfyUI comfy_extras/nodes_lt.py at 085a1a9). IC-LoRA's reference scale:
# - reference_downscale_factor: ltx-pipelines (iclora_utils.py L30-38
#   `read_lora_reference_downscale_factor`, used by ic_lora.py L156) and ComfyUI
#   (`GetICLoRAParameters.execute`, the only key it reads);
# - reference_temporal_scale_factor: ltx-pipelines only (iclora_utils.py L41-49, ic_lora.py L165);
# - reference_spatial_scale_factor: read by neither, so never written.
# diffusers' LTX2InContextPipeline takes the factor as an argument, so its file has none.
CONSUMER_ONLY = {
    "reference_downscale_factor": ("ltx-pipelines", "comfyui"),
    "reference_temporal_scale_factor": ("ltx-pipelines",),
    "reference_spatial_scale_factor": (),
}


def _read_only_by(consumer: str, metadata: dict[str, str]) -> dict[str, str]:
    return {k: metadata[k] for k, who in CONSUMER_ONLY.items() if k in metadata and consumer in who}


def _consumer_header(transformer: torch.nn.Module, consumer: str) -> dict[str, str]:
    if consumer == "diffusers" and adapter_kind(transformer) == "lokr":
        return {"format": "diffusers"}  # its equal LoRA: ranks from shapes, alpha = rank
    if consumer == "diffusers":
        return {"format": "diffusers", **_inference_header(transformer)}
    return {"format": "comfyui"}  # both use `diffusion_model.<official name>` keys


def _base_weights(transformer: torch.nn.Module) -> BaseWeight:
    """The base weight each adapted module computes with: dequantised on a quantised base."""
    quantized = quantized_modules(transformer)

    def weight(module: str) -> torch.Tensor:
        if module in quantized:
            return dequantized_weight(quantized[module])
        return transformer.get_submodule(module).get_base_layer().weight

    return weight


def _base_norms(transformer: torch.nn.Module, base_weight: BaseWeight) -> str:
    """{module: Frobenius norm of its base weight}, so the registry (torch-free, no base model)
    can tell an update below numeric noise from a real one."""
    firsts = (".lora_A.weight", ".lokr_w1", ".lokr_w1_a")  # one entry per adapted module
    modules = sorted(
        _strip(k.removeprefix("transformer."), firsts)
        for k in adapter_state_dict(transformer)
        if k.endswith(firsts)
    )
    norms = {m: float(base_weight(m).float().norm()) for m in modules}
    return json.dumps({m: float(f"{v:.6g}") for m, v in norms.items()}, sort_keys=True)


def _strip(key: str, suffixes: tuple[str, ...]) -> str:
    for suffix in suffixes:
        key = key.removesuffix(suffix)
    return key


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
    """diffusers' LoRA config header for the alpha-folded file: lora_alpha = r per module
    (scale 1, the file's lora_B already carries alpha / r) and dropout 0 (diffusers injects the
    layers in training mode, so a header dropout would drop activations at inference)."""
    header = diffusers_metadata_header(transformer)
    ((key, raw),) = header.items()
    config = json.loads(raw)
    config["transformer.lora_alpha"] = config["transformer.r"]
    config["transformer.alpha_pattern"] = dict(config.get("transformer.rank_pattern") or {})
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
    """The velocities for fixed noise at σ = 0.5, video and (with audio) audio flattened into
    one vector, as a function of the transformer used: an audio-only adapter (text_to_audio)
    may leave the video untouched, so both streams are compared."""
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
        v, a = predict_velocity(denoiser, x_v, x_a, batch.text, sigma, sigma, fps=batch.fps)
        return v.flatten() if a is None else torch.cat([v.flatten(), a.flatten()])

    return run


@contextmanager
def _loaded(pipe, path: Path) -> Iterator[None]:
    """`path` applied to `pipe.transformer` by its consumer's arithmetic, per its header:
    diffusers' own `load_lora_weights(path)`; ltx-core's fusion; ComfyUI's patching; a PEFT
    LoKr file through PEFT. Weights and adapters are restored after."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    consumer = header.get("consumer")
    if header.get("format") == "peft":
        with load_lokr(pipe.transformer, path):
            yield
    elif consumer == "comfyui":
        with comfyui_merged(pipe.transformer, load_file(str(path))):
            yield
    elif consumer == "ltx-pipelines":
        with ltx_core_fused(pipe.transformer, load_file(str(path))):
            yield
    elif consumer == "diffusers":
        pipe.load_lora_weights(str(path), adapter_name="export-check")
        try:
            yield
        finally:
            pipe.unload_lora_weights()
    else:
        raise RuntimeError(f"{path.name}: no consumer in its header, nothing to check it with")


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
