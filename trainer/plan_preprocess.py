"""The memory preprocessing needs, before anything loads. It runs in two phases and holds one
phase's weights at a time (trainer/cache.py): **text** (the Gemma text encoder and the text
connectors' projections, one prompt at a time) and **video** (the VAE, and the audio VAE with
audio, one clip at a time). Each phase's peak is its weights, in the format they are placed
in, plus the traced peak of encoding one item: the encoders run on fake tensors while
`trainer.plan_trace.LiveStorages` counts live storages, as the training plan traces a step
(on CPU the traced peak equals the eager one, tests/unit/test_trainer_plan_preprocess.py)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ltx.config import ModelConfig
from stagekit.errors import UserError
from trainer.config import PreprocessConfig
from trainer.plan_sizes import (
    NF4_BLOCK,
    config_json,
    module_bytes,
    projection_bytes,
    quantized_bytes,
)

TEXT_PROBE_LAYERS = (2, 3, 4)  # Gemma layers traced to extrapolate the full depth
ONCE_SLACK = 1024  # bytes the first traced call allocates once (trainer.plan_trace)


@dataclass(frozen=True)
class PreprocessShape:
    """What preprocessing's memory depends on."""

    text_encoder: dict[str, Any] | None  # transformers config (None: unknown without the file)
    connectors: dict[str, Any]
    vae: dict[str, Any]
    audio_vae: dict[str, Any] | None  # None: no audio encoded
    dtype: str  # model.dtype
    text_tokens: int  # padded prompt length
    clip: tuple[int, int, int]  # frames, height, width of the largest clip
    fps: float
    tiling: bool  # preprocess.vae_tiling
    text_quantize: str = "none"  # preprocess.text_encoder_quantize


@dataclass(frozen=True)
class Phase:
    """One phase's bytes on the encoding device, by term."""

    name: str
    terms: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.terms.values())


def phases(shape: PreprocessShape) -> list[Phase]:
    """The text phase (when the text encoder's size is known) and the video phase."""
    out = [] if shape.text_encoder is None else [text_phase(shape)]
    return [*out, video_phase(shape)]


# ---------------------------------------------------------------------------------- text phase


def text_phase(shape: PreprocessShape) -> Phase:
    encoder, connectors = _text_encoder(shape), _connectors(shape)
    dtype_bytes = _dtype_bytes(shape.dtype)
    linear = _linear_facts(encoder)
    fmt = shape.text_quantize
    weights = module_bytes(encoder) - linear["numel"] * dtype_bytes + linear["stored"][fmt]
    terms = {
        f"text encoder ({_label(fmt, shape.dtype)})": weights,
        "text projections (of the connectors)": projection_bytes(connectors),
        "encoding one prompt (traced)": text_peak(shape),
        # a quantised layer computes with its weight dequantised, one layer at a time
        "dequantisation workspace": linear["largest"] * dtype_bytes if fmt != "none" else 0,
    }
    return Phase("text", {k: v for k, v in terms.items() if v or "traced" in k})


def text_peak(shape: PreprocessShape) -> int:
    """The traced peak of encoding one prompt: Gemma with every hidden state kept and stacked,
    then the connectors on the stacked states."""
    return max(encoder_peak(shape), _trace_connectors(shape))


def encoder_peak(shape: PreprocessShape) -> int:
    """Gemma's part: its layers are identical, so a deep encoder is traced at 2, 3 and 4
    layers and extrapolated when those lie on a line (else traced whole)."""
    layers = _text_layers(shape.text_encoder)
    if layers <= max(TEXT_PROBE_LAYERS):
        return _trace_encoder(shape)
    probes = [_trace_encoder(_with_text_layers(shape, n)) for n in TEXT_PROBE_LAYERS]
    steps = [b - a for a, b in itertools.pairwise(probes)]
    if max(steps) - min(steps) > ONCE_SLACK:
        return _trace_encoder(shape)
    return probes[-1] + (layers - TEXT_PROBE_LAYERS[-1]) * steps[-1]


def _trace_encoder(shape: PreprocessShape) -> int:
    """As ltx.encode.gemma_prompt_embeds: the forward, its hidden states stacked."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from trainer.plan_trace import LiveStorages, fake_parameters

    mode = FakeTensorMode()
    encoder = _text_encoder(shape)
    fake_parameters(mode, encoder)
    counter = LiveStorages()
    with mode, torch.no_grad():
        ids = torch.zeros(1, shape.text_tokens, dtype=torch.long)
        mask = torch.ones(1, shape.text_tokens, dtype=torch.long)
        with counter:
            out = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            torch.stack(out.hidden_states, dim=-1).flatten(2, 3)
    return counter.peak


def _trace_connectors(shape: PreprocessShape) -> int:
    """As ltx.encode.project_text, on the stacked states (made inside the count: they are
    alive while the connectors run)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ltx.encode import project_text
    from trainer.plan_trace import LiveStorages, fake_parameters

    mode = FakeTensorMode()
    connectors = _connectors(shape)
    fake_parameters(mode, connectors)
    text = (shape.text_encoder or {}).get("text_config", shape.text_encoder or {})
    width = int(text["hidden_size"]) * (_text_layers(shape.text_encoder) + 1)
    counter = LiveStorages()
    with mode, torch.no_grad():
        mask = torch.ones(1, shape.text_tokens, dtype=torch.long)
        with counter:
            embeds = torch.empty(1, shape.text_tokens, width, dtype=getattr(torch, shape.dtype))
            project_text(connectors, embeds, mask)
    return counter.peak


def _text_encoder(shape: PreprocessShape) -> torch.nn.Module:
    """The text encoder of `shape`'s config, on meta."""
    import transformers

    config = dict(shape.text_encoder or {})
    cls_name = (config.get("architectures") or ["Gemma3ForConditionalGeneration"])[0]
    config_cls = type(transformers.AutoConfig.for_model(config["model_type"]))
    with _default_dtype(shape.dtype), torch.device("meta"):
        encoder = getattr(transformers, cls_name)(config_cls.from_dict(config))
    return encoder.eval()


def _connectors(shape: PreprocessShape) -> torch.nn.Module:
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    with _default_dtype(shape.dtype), torch.device("meta"):
        return LTX2TextConnectors(**shape.connectors).eval()


def _text_layers(config: dict[str, Any] | None) -> int:
    return int((config or {}).get("text_config", config or {}).get("num_hidden_layers", 0))


def _with_text_layers(shape: PreprocessShape, layers: int) -> PreprocessShape:
    config = dict(shape.text_encoder or {})
    text = dict(config.get("text_config", {}))
    text["num_hidden_layers"] = layers
    # transformers 5 lists each layer's attention kind: derived again from the sliding-window
    # pattern for the new depth
    text.pop("layer_types", None)
    return replace(shape, text_encoder={**config, "text_config": text})


def _linear_facts(encoder: torch.nn.Module) -> dict[str, Any]:
    """The Linear layers a quantised load replaces (all but the output head, as transformers'
    `get_keys_to_not_convert` leaves it): their elements, and their bytes as each format
    stores them, layer by layer (nf4's blocks round up per layer)."""
    from trainer.text_encoder import KEEP_FLOAT

    dtype_bytes = next(encoder.parameters()).element_size()
    facts: dict[str, Any] = {"numel": 0, "count": 0, "largest": 0}
    facts["stored"] = dict.fromkeys(TEXT_FORMATS, 0)
    for name, module in encoder.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith(KEEP_FLOAT):
            n, rows = module.weight.numel(), module.weight.shape[0]
            facts["numel"] += n
            facts["count"] += 1
            facts["largest"] = max(facts["largest"], n)
            for fmt in TEXT_FORMATS:
                facts["stored"][fmt] += quantized_bytes(n, rows, 1, fmt, dtype_bytes)
    return facts


# --------------------------------------------------------------------------------- video phase


def video_phase(shape: PreprocessShape) -> Phase:
    vae, audio_vae = _video_modules(shape, "meta")
    terms = {
        "video VAE": module_bytes(vae),
        "audio VAE": module_bytes(audio_vae) if audio_vae else 0,
        "encoding one clip (traced)": video_peak(shape),
    }
    return Phase("video", {k: v for k, v in terms.items() if v or "traced" in k})


def video_peak(shape: PreprocessShape) -> int:
    """The traced peak of encoding the largest clip (the video and audio VAEs run one after
    the other, so the larger of the two)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from trainer.plan_trace import LiveStorages, fake_parameters

    mode = FakeTensorMode()
    vae, audio_vae = _video_modules(shape, "meta")
    fake_parameters(mode, vae)
    if shape.tiling:
        vae.enable_tiling()
    frames, height, width = shape.clip
    dtype = getattr(torch, shape.dtype)
    peaks = []
    with mode, torch.no_grad():
        counter = LiveStorages()
        with counter:  # the clip itself is on the device while it is encoded
            pixels = torch.empty(1, 3, frames, height, width, dtype=dtype)
            vae.encode(pixels).latent_dist.mode()
        peaks.append(counter.peak)
        if audio_vae is not None:
            fake_parameters(mode, audio_vae)
            counter = LiveStorages()
            with counter:
                mel = torch.empty(1, *_mel_shape(audio_vae, frames / shape.fps), dtype=dtype)
                audio_vae.encode(mel).latent_dist.mode()
            peaks.append(counter.peak)
    return max(peaks)


def _video_modules(
    shape: PreprocessShape, device: str
) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video

    with _default_dtype(shape.dtype), torch.device(device):
        vae = AutoencoderKLLTX2Video.from_config(shape.vae)
        audio = AutoencoderKLLTX2Audio.from_config(shape.audio_vae) if shape.audio_vae else None
    return vae.eval(), None if audio is None else audio.eval()


def _mel_shape(audio_vae: torch.nn.Module, seconds: float) -> tuple[int, int, int]:
    """[channels, mel frames, mel bins] of `seconds` of audio, as ltx.encode.waveform_to_mel
    computes it (one frame per hop)."""
    cfg = audio_vae.config
    frames = int(seconds * cfg.sample_rate / cfg.mel_hop_length) + 1
    return cfg.in_channels, frames, cfg.mel_bins


# ------------------------------------------------------------------------------------ helpers


def _dtype_bytes(dtype: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype)).element_size()


def _label(fmt: str, dtype: str) -> str:
    if fmt == "none":
        return dtype
    block = f", blocks of {NF4_BLOCK}" if fmt == "nf4" else ""
    return f"Linear layers {fmt}{block}, the rest {dtype}"


class _default_dtype:
    """Modules built in the load dtype, as they are loaded."""

    def __init__(self, dtype: str) -> None:
        self.dtype = getattr(torch, dtype)

    def __enter__(self) -> None:
        self.saved = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc: object) -> None:
        torch.set_default_dtype(self.saved)


# ------------------------------------------------------------------------- plan and decision

COMPONENTS = ("text_encoder", "connectors", "vae", "audio_vae")
TEXT_FORMATS = ("none", "int8", "nf4")  # fastest (and most exact) first


def component_configs(
    cfg: ModelConfig, model_path: Path | None
) -> dict[str, dict[str, Any] | None]:
    """The configs of the components preprocessing loads: the model folder's own where it is
    there, else the version's full-size ones (ltx.versions; the 2.5 text encoder's only in
    its file)."""
    from ltx.versions import get_version, text_encoder_config

    if model_path is not None and all(
        (Path(model_path) / n / "config.json").is_file() for n in COMPONENTS
    ):
        return {n: config_json(Path(model_path) / n / "config.json") for n in COMPONENTS}
    version = get_version(cfg.ltx_version)
    return {
        "text_encoder": text_encoder_config(cfg.ltx_version),
        **{n: dict(version.configs[n]) for n in ("connectors", "vae", "audio_vae")},
    }


def make_shape(
    model_cfg: ModelConfig,
    cfg: PreprocessConfig,
    model_path: Path | None,
    clip: tuple[int, int, int],
    fps: float,
    text_tokens: int,
) -> PreprocessShape:
    configs = component_configs(model_cfg, model_path)
    return PreprocessShape(
        text_encoder=configs["text_encoder"],
        connectors=configs["connectors"] or {},
        vae=configs["vae"] or {},
        audio_vae=configs["audio_vae"] if cfg.with_audio else None,
        dtype=model_cfg.dtype,
        text_tokens=text_tokens,
        clip=clip,
        fps=fps,
        tiling=cfg.vae_tiling,
        text_quantize=cfg.text_encoder_quantize,
    )


def gpu_peak(planned: list[Phase]) -> int:
    """The card's peak: the larger phase, with the allocator's and CUDA's own overheads (the
    training plan's estimates, trainer.plan)."""
    from trainer.plan import CUBLAS_WORKSPACE, CUDA_CONTEXT, FRAGMENTATION

    largest = max(p.total for p in planned)
    return int(largest * (1 + FRAGMENTATION)) + CUDA_CONTEXT + 2 * CUBLAS_WORKSPACE


def fitting(shape: PreprocessShape, budget: int) -> list[tuple[str, int]]:
    """The preprocess settings that fit `budget`, fastest first (text encoder unquantised
    before int8 before nf4; VAE untiled before tiled), each as overrides and its peak. A
    setting configured on is never turned off."""
    tilings = (True,) if shape.tiling else (False, True)
    start = TEXT_FORMATS.index(shape.text_quantize)
    out = []
    for fmt in TEXT_FORMATS[start:]:
        for tiling in tilings:
            candidate = replace(shape, text_quantize=fmt, tiling=tiling)
            peak = gpu_peak(phases(candidate))
            if peak <= budget:
                out.append((_overrides(candidate, shape), peak))
                break
    return out


def _overrides(shape: PreprocessShape, configured: PreprocessShape) -> str:
    """The overrides that turn the configured settings into `shape`'s."""
    changed = [
        f"preprocess.text_encoder_quantize={shape.text_quantize}"
        if shape.text_quantize != configured.text_quantize
        else "",
        "preprocess.vae_tiling=true" if shape.tiling != configured.tiling else "",
    ]
    return " ".join(c for c in changed if c) or "(as configured)"


def format_preprocess(shape: PreprocessShape, planned: list[Phase], gpu: bool) -> str:
    """The phases' tables, labelled as planned."""
    frames, height, width = shape.clip
    lines = [
        f"preprocess plan (planned, not measured): one phase's weights at a time; clip "
        f"{frames}x{height}x{width}{' with audio' if shape.audio_vae else ''}, "
        f"{shape.text_tokens} text tokens, VAE tiling {'on' if shape.tiling else 'off'}"
    ]
    if shape.text_encoder is None:
        lines.append("  text phase: not planned (the Gemma 4 file's config sizes it: model.path)")
    width_ = max(len(k) for phase in planned for k in phase.terms) + 2
    for phase in planned:
        lines.append(f"  {phase.name + ' phase':<{width_ + 2}}{'GiB':>8}")
        lines += [f"    {k:<{width_}}{v / 2**30:8.2f}" for k, v in phase.terms.items()]
        lines.append(f"    {'total':<{width_}}{phase.total / 2**30:8.2f}")
    if gpu:
        lines.append(
            f"  peak on the GPU with CUDA's own overheads: {gpu_peak(planned) / 2**30:.2f} GiB"
        )
    return "\n".join(lines)


def check_fits(shape: PreprocessShape, card: Any) -> None:
    """Stop before loading when the configured preprocessing will not fit `card`, naming the
    settings that do."""
    planned = phases(shape)
    peak = gpu_peak(planned)
    if peak <= card.total:
        return
    options = fitting(shape, card.total)
    fix = (
        f"set {options[0][0]} (planned {options[0][1] / 2**30:.1f} GiB)"
        if options
        else "no text-encoder format or tiling fits: lower curation.frames or the buckets"
    )
    raise UserError(
        f"preprocessing will not fit {card.label}: planned peak {peak / 2**30:.1f} GiB "
        f"(`ltx-lora plan` shows each phase). To go on, {fix}"
    )
