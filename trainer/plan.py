"""The memory plan: peak GPU memory and host RAM of a training step, predicted before any weight
loads (`ltx-lora plan`, and the first thing `train` does).

A plan adds two kinds of terms:
- traced: what one step allocates on top of the weights (activations, adapter gradients,
  optimiser temporaries), from the step itself run on fake tensors (`trainer.plan_trace`),
  cached per step shape in the workspace (`.ltx-lora/plan-cache.json`);
- analytic: the base's weights in their storage format, counted on the meta device (exact
  parameter counts), the adapter and its optimiser state, the swap ring and the pinned swap
  set, the loader's host peak, and the GPU's own overheads (named constants below).

With a budget (`--gpu 24GB`, or the detected card) it lists the settings that fit, fastest
first, and a run that will not fit stops before loading with the knob to turn.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ltx import bases
from ltx.config import ModelConfig
from stagekit.errors import UserError
from stagekit.files import read_json, write_json
from stagekit.hashing import sha256_json
from trainer.config import LoraConfig, TrainerConfig
from trainer.plan_trace import StepPeak, StepShape, step_peak

GIB = 1 << 30
MIB = 1 << 20
CACHE_FORMAT = 2  # bump when what a cached figure means changes (2: projection_bytes)

# GPU overheads. ESTIMATES, not measurements: no GPU was available where the plan was written.
# Calibrate them once on a real card with bench.gpu_memory (issue 16) and replace them here.
CUDA_CONTEXT = 512 * MIB  # the CUDA context and the kernels torch loads (~300-800 MiB seen)
CUBLAS_WORKSPACE = 32 * MIB  # cuBLAS(Lt) workspace per stream (torch's default on Hopper)
FRAGMENTATION = 0.10  # caching allocator: reserved but unused, as a share of the allocated peak
CUDA_HOST = 1 * GIB  # host RSS the CUDA runtime and its libraries add to a process
# Measured on CPU (2-core x86-64, torch 2.13): the RSS a training step adds besides its tensors
# (autograd's engine, kernel thread pools and caches): 27-37 MiB over five step shapes, with
# glibc's mmap threshold fixed. glibc's default threshold moves up as blocks are freed, so it
# can keep up to ~2x the step's peak in its heap: tests/integration/test_plan.py fixes it.
CPU_STEP_RUNTIME = 32 * MIB

# Weight-only formats (trainer/quantize.py): bytes per weight, and what each keeps beside it.
# int8/fp8: optimum-quanto, one absmax scale per output row in the load dtype.
# nf4: bitsandbytes NF4, blocks of 64 weights, each block's absmax double-quantised to 8 bits
# with one float32 scale per 256 blocks (QLoRA's layout).
QUANT_FORMATS = ("none", "int8", "fp8", "nf4")
NF4_BLOCK, NF4_BLOCK2 = 64, 256
# Speed order of the settings that fit, an order and not a measured prediction: a format costs
# dequantisation on every matmul (none < int8 < nf4; fp8 is never listed: int8's memory with a
# larger error), checkpointing one extra forward, a swapped block its copy that prefetch cannot
# hide. Format first, then checkpointing, then fewer swapped blocks.
FASTEST_FIRST = ("none", "int8", "nf4")
RING = 2  # device buffers of the block streamer (trainer/swap.py RING)
LOADER_LAYERS = 4  # float layers in flight while the loader quantises (measured: 3.7)


@dataclass(frozen=True)
class Setup:
    """What a plan is for: the step's shape and the knobs that only change analytic terms."""

    step: StepShape
    quantize: str = "none"  # model.quantize
    blocks_to_swap: int = 0  # trainer.blocks_to_swap (resolved)
    label: str = ""  # the model, for the report
    clip: str = ""  # the clip, for the report

    @property
    def layers(self) -> int:
        return int(self.step.transformer.get("num_layers", 48))

    def knobs(self) -> dict[str, Any]:
        """The settings as config overrides."""
        return {
            "model.quantize": self.quantize,
            "trainer.gradient_checkpointing": self.step.checkpointing,
            "trainer.blocks_to_swap": self.blocks_to_swap,
        }

    def vary(self, quantize: str, checkpointing: bool, blocks_to_swap: int) -> Setup:
        step = replace(self.step, checkpointing=checkpointing)
        return replace(self, step=step, quantize=quantize, blocks_to_swap=blocks_to_swap)


@dataclass(frozen=True)
class Plan:
    """Bytes by component: `gpu` (empty when the step runs on the CPU) and `host`."""

    setup: Setup
    gpu: dict[str, int]
    host: dict[str, int]
    traced: StepPeak | None  # None: the step was not traced (its terms are missing)
    facts: dict[str, Any] = field(repr=False)

    @property
    def gpu_total(self) -> int:
        return sum(self.gpu.values())

    @property
    def host_total(self) -> int:
        return sum(self.host.values())

    def fits(self, budget: int) -> bool:
        return self.gpu_total <= budget


# ------------------------------------------------------------------------------ what is planned


def model_configs(cfg: ModelConfig, model_path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The transformer and connectors configs of the model, without its weights: the model
    folder's own (when there is one), `model.config_dir`'s, the tiny or demo builder's, else
    the version's full-size configs (ltx.versions)."""
    from ltx.versions import get_version

    names = ("transformer", "connectors")
    for folder in (model_path, Path(cfg.config_dir).expanduser() if cfg.config_dir else None):
        if folder is not None and all((folder / n / "config.json").is_file() for n in names):
            return {n: config_json(folder / n / "config.json") for n in names}
    if cfg.source == "tiny":
        from ltx import tiny

        v = cfg.ltx_version
        return {"transformer": tiny.transformer_config(v), "connectors": tiny.connectors_config(v)}
    if cfg.source in bases.names():
        return {n: dict(c) for n, c in bases.packaged_base(cfg.source).configs.items()}
    configs = get_version(cfg.ltx_version).configs
    return {n: dict(configs[n]) for n in names}


def config_json(path: Path) -> dict[str, Any]:
    """A component's config.json without its `_`-prefixed bookkeeping keys."""
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


@dataclass(frozen=True)
class Latents:
    """One sample as the step sees it: [C, F, H, W] video, [C, L, M] audio (None: video
    only), the padded prompt length."""

    video: tuple[int, ...]
    audio: tuple[int, ...] | None
    text_tokens: int
    fps: float
    label: str


def latents_for_clip(
    cfg: ModelConfig,
    transformer: dict[str, Any],
    frames: int,
    height: int,
    width: int,
    fps: float,
    audio: bool,
) -> Latents:
    """The latents a frames x height x width clip encodes to (the VAE's compression, the
    audio VAE's 25 latents a second)."""
    from ltx.specs import AUDIO_LATENTS_PER_SECOND, spec_for_source

    spec = spec_for_source(cfg.source)
    t, s, _ = transformer.get("vae_scale_factors", (8, 32, 32))
    channels = transformer.get("in_channels", 128)
    video = (channels, (frames - 1) // t + 1, height // s, width // s)
    mel = spec.audio_mel_bins // 4
    length = round(frames / fps * AUDIO_LATENTS_PER_SECOND)
    audio_shape = (transformer.get("audio_in_channels", 128) // mel, length, mel)
    label = f"{frames}x{height}x{width} @ {fps:g} fps"
    return Latents(video, audio_shape if audio else None, spec.text_tokens, fps, label)


def latents_from_cache(cache_dir: Path, index: dict[str, Any], strategy: str) -> Latents:
    """The largest cached sample's shapes, read from its shard's header (no tensor is read
    but the prompt length)."""
    from safetensors import safe_open

    from trainer.cache import MASK, TEXT, TEXT_LENGTH

    entries = list(index.get("entries", {}).values())
    if not entries:
        raise UserError(f"the latent cache {cache_dir} is empty: re-run `ltx-lora preprocess`")
    largest = max(entries, key=lambda e: e["bucket"][0] * e["bucket"][1] * e["bucket"][2])
    with safe_open(str(Path(cache_dir) / largest["file"]), framework="pt") as f:
        keys = set(f.keys())
        video = tuple(f.get_slice("video").get_shape())
        audio = tuple(f.get_slice("audio").get_shape()) if "audio" in keys else None
        if TEXT_LENGTH in keys:
            tokens = int(f.get_tensor(TEXT_LENGTH)[0])
        else:  # cache format 2: padded text
            tokens = f.get_slice(TEXT + MASK).get_shape()[-1]
    if strategy == "text_to_video":
        audio = None
    w, h, frames = largest["bucket"]
    label = f"{frames}x{h}x{w} @ {float(largest['fps']):g} fps (the cache's largest bucket)"
    return Latents(video, audio, tokens, float(largest["fps"]), label)


def make_setup(
    model_cfg: ModelConfig,
    lora_cfg: LoraConfig,
    cfg: TrainerConfig,
    configs: dict[str, dict[str, Any]],
    latents: Latents,
    device: str,
    attention: str = "fused",
) -> Setup:
    """The plan's input from the validated config sections."""
    b = cfg.batch_size
    swap = getattr(cfg, "blocks_to_swap", 0)  # trainer/swap.py's knob
    step = StepShape(
        transformer=dict(configs["transformer"]),
        connectors=dict(configs["connectors"]),
        dtype=model_cfg.dtype,
        video=(b, *latents.video),
        audio=None if latents.audio is None else (b, *latents.audio),
        text_tokens=latents.text_tokens,
        fps=latents.fps,
        strategy=cfg.strategy,
        lora=lora_cfg,
        checkpointing=cfg.gradient_checkpointing,
        optimizer=cfg.optimizer,
        mixed_precision=cfg.mixed_precision,
        attention=attention,
        device=device,
    )
    label = f"LTX-{model_cfg.ltx_version} {model_cfg.name} ({model_cfg.dtype})"
    return Setup(
        step,
        quantize=getattr(model_cfg, "quantize", "none"),  # trainer/quantize.py's knob
        blocks_to_swap=0 if swap == "auto" else int(swap),
        label=label,
        clip=latents.label + (" with audio" if latents.audio else ", video only"),
    )


# ---------------------------------------------------------------------------------- the plan


def make_plan(setup: Setup, cache: PlanCache | None = None, trace: bool = True) -> Plan:
    """Every term of `setup`'s peak, on the GPU (when it runs there) and on the host.
    `trace=False`: the step's terms only if the cache holds them (tracing takes seconds)."""
    cache = cache or PlanCache(None)
    facts = cache.facts(setup.step)
    traced = cache.step_peak(setup.step, trace)
    step = traced or StepPeak(0, 0, ())
    dtype_bytes = facts["dtype_bytes"]
    base = _base_bytes(facts, setup.quantize, dtype_bytes)
    streamed = _block_bytes(facts, setup.quantize, dtype_bytes)  # one swapped block
    n = setup.blocks_to_swap
    ring = min(RING, n) * streamed
    adapter = facts["adapter_bytes"] + _optimizer_state(facts, setup.step.optimizer)
    workspace = (
        facts["largest_block_linear"] * dtype_bytes if setup.quantize != "none" else 0
    )  # one dequantised weight at a time
    device = {
        f"base weights ({_format_label(setup.quantize, facts)})": base - n * streamed,
        # the text projections stay on the host: the cache holds projected text
        "text connectors (without their text projections)": facts["connectors_bytes"]
        - facts["projection_bytes"],
        "adapter + optimiser state": adapter,
        "step: activations (traced)": step.peak - step.gradients,
        "step: adapter gradients at the peak (traced)": step.gradients,
        "dequantisation workspace": workspace,
        f"swap ring ({min(RING, n)} blocks)": ring,
    }
    # place_base streams the transformer tensor by tensor (tests/integration/
    # test_low_ram_loading.py: its peak over what it keeps is under 3 float layers); the host
    # holds the unquantised part until the caller moves it, the connectors load whole
    in_flight = LOADER_LAYERS * workspace
    quantized_part = facts["blocks_linear"]["numel"] * dtype_bytes if workspace else 0
    loaded = facts["transformer_bytes"] - quantized_part + in_flight + facts["connectors_bytes"]
    if setup.step.device == "cpu":  # the "device" is the host: swapped masters stay there too
        host = {"process baseline (measured now)": process_rss(), **device}
        host[f"swap masters ({n} blocks)"] = n * streamed
        host["text projections (kept on the host)"] = facts["projection_bytes"]
        host["step runtime: autograd, kernels (measured on CPU)"] = CPU_STEP_RUNTIME
        # the loader streams: a few float layers in flight beside what it keeps
        host["loader: float layers in flight while quantising"] = in_flight
        return Plan(setup, {}, _nonzero(host), traced, facts)
    allocated = sum(device.values())
    gpu = {
        **device,
        f"allocator fragmentation ({FRAGMENTATION:.0%}, estimate)": int(FRAGMENTATION * allocated),
        "CUDA context + cuBLAS workspace (estimates)": CUDA_CONTEXT + 2 * CUBLAS_WORKSPACE,
    }
    host = {
        "process baseline (measured now + CUDA runtime estimate)": process_rss() + _cuda_host(),
        "loader: connectors, the transformer's host part, layers in flight": loaded,
        f"pinned swap set ({n} blocks)": n * streamed,
    }
    return Plan(setup, _nonzero(gpu), _nonzero(host), traced, facts)


def _nonzero(terms: dict[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in terms.items() if v or k.startswith(("base", "step: act"))}


def quantized_bytes(numel: int, rows: int, layers: int, fmt: str, dtype_bytes: int) -> int:
    """Bytes of `layers` Linear weights of `numel` elements and `rows` output rows in all, as
    `fmt` stores them (what trainer.quantize.stored_bytes reports)."""
    if fmt == "none":
        return numel * dtype_bytes
    if fmt in ("int8", "fp8"):
        return numel + rows * dtype_bytes
    if fmt == "nf4":
        blocks = numel // NF4_BLOCK
        return numel // 2 + blocks + 4 * (-(-blocks // NF4_BLOCK2)) + 4 * layers
    raise UserError(f"model.quantize={fmt} is not one of {', '.join(QUANT_FORMATS)}")


def _base_bytes(facts: dict[str, Any], fmt: str, dtype_bytes: int) -> int:
    """The transformer as placed: block Linear weights in `fmt`, everything else as loaded."""
    linear = facts["blocks_linear"]
    quantized = quantized_bytes(linear["numel"], linear["rows"], linear["count"], fmt, dtype_bytes)
    return facts["transformer_bytes"] - linear["numel"] * dtype_bytes + quantized


def _block_bytes(facts: dict[str, Any], fmt: str, dtype_bytes: int) -> int:
    """What one swapped block streams: its frozen Linear weights (in `fmt`) and biases."""
    one = facts["block_linear"]
    weights = quantized_bytes(one["numel"], one["rows"], one["count"], fmt, dtype_bytes)
    return weights + one["bias_bytes"]


def _optimizer_state(facts: dict[str, Any], optimizer: str) -> int:
    """AdamW: two moments in the adapter's dtype; 8-bit AdamW: one byte each plus a float32
    scale per 256-value block (bitsandbytes' blockwise layout)."""
    numel = facts["adapter_numel"]
    if optimizer == "adamw8bit":
        return 2 * (numel + 4 * (-(-numel // 256)))
    return 2 * facts["adapter_bytes"]


def _format_label(fmt: str, facts: dict[str, Any]) -> str:
    dtype = facts["dtype"]
    return dtype if fmt == "none" else f"block Linear layers {fmt}, the rest {dtype}"


def model_facts(step: StepShape) -> dict[str, Any]:
    """Parameter counts of the transformer (with the adapter) and the connectors, on meta."""
    import torch

    from trainer.plan_trace import build

    quantize = _quantizable()
    transformer, connectors = build(replace(step, checkpointing=False), "meta")
    blocks = {"numel": 0, "rows": 0, "count": 0}
    per_block: dict[int, dict[str, int]] = {}
    largest = 0
    for name, module in transformer.named_modules():
        plain = name.replace(".base_layer", "")
        if not isinstance(module, torch.nn.Linear) or module.weight.requires_grad:
            continue
        if not quantize(plain, module):
            continue
        n, rows = module.weight.numel(), module.weight.shape[0]
        blocks["numel"] += n
        blocks["rows"] += rows
        blocks["count"] += 1
        largest = max(largest, n)
        index = int(plain.split(".")[1])
        one = per_block.setdefault(index, {"numel": 0, "rows": 0, "count": 0, "bias_bytes": 0})
        one["numel"] += n
        one["rows"] += rows
        one["count"] += 1
        if module.bias is not None:
            one["bias_bytes"] += module.bias.numel() * module.bias.element_size()
    frozen = [p for p in transformer.parameters() if not p.requires_grad]
    adapter = [p for p in transformer.parameters() if p.requires_grad]
    dtype = getattr(torch, step.dtype)
    return {
        "dtype": step.dtype,
        "dtype_bytes": torch.empty((), dtype=dtype).element_size(),
        "transformer_params": sum(p.numel() for p in frozen),
        "transformer_bytes": tensor_bytes(frozen) + tensor_bytes(transformer.buffers()),
        "blocks_linear": blocks,
        # the largest block: every swapped block gets a ring buffer this size
        "block_linear": max(per_block.values(), key=lambda b: b["numel"] * 2 + b["bias_bytes"]),
        "largest_block_linear": largest,
        "connectors_params": sum(p.numel() for p in connectors.parameters()),
        "connectors_bytes": module_bytes(connectors),
        "projection_bytes": projection_bytes(connectors),
        "adapter_numel": sum(p.numel() for p in adapter),
        "adapter_bytes": tensor_bytes(adapter),
    }


def projection_bytes(connectors: Any) -> int:
    """The connectors' text projections (trainer.placement keeps them on the host)."""
    from trainer.text_encoder import PROJECTIONS

    parts = [getattr(connectors, n) for n in PROJECTIONS if hasattr(connectors, n)]
    return sum(module_bytes(m) for m in parts)


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers."""
    return tensor_bytes([*module.parameters(), *module.buffers()])


def tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _quantizable() -> Any:
    """trainer.quantize's rule for which layers a format replaces (the block Linear layers)."""
    try:
        from trainer.quantize import quantizable
    except ImportError:  # before quantisation existed: the same rule
        return lambda name, _module: name.startswith("transformer_blocks.")
    return quantizable


def _cuda_host() -> int:
    """CUDA_HOST, unless this process has already initialised CUDA (then it is in its RSS)."""
    import torch

    return 0 if torch.cuda.is_initialized() else CUDA_HOST


def process_rss() -> int:
    """This process's resident memory once the libraries a run loads the model with are
    imported (they add ~0.1 GiB): what the run starts from."""
    import accelerate  # noqa: F401
    import peft  # noqa: F401
    import psutil
    from diffusers import LTX2VideoTransformer3DModel  # noqa: F401
    from diffusers.pipelines.ltx2 import LTX2TextConnectors  # noqa: F401

    return psutil.Process().memory_info().rss


# ------------------------------------------------------------------------------ the cache


class PlanCache:
    """Traced peaks and parameter counts per step shape, in a JSON file (None: this process
    only), so a run pays the trace once."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._data: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            stored = read_json(self.path)
        except (OSError, ValueError):
            return {}
        return stored.get("entries", {}) if stored.get("format") == CACHE_FORMAT else {}

    def step_peak(self, step: StepShape, trace: bool = True) -> StepPeak | None:
        """The traced peak of `step` (None: not cached, and `trace` is off)."""
        key = "step:" + _key(asdict(step))
        if key not in self._data:
            if not trace:
                return None
            peak = step_peak(step)
            self._store(key, {**asdict(peak), "layers": list(peak.layers)})
        row = self._data[key]
        return StepPeak(row["peak"], row["gradients"], tuple(row["layers"]))

    def facts(self, step: StepShape) -> dict[str, Any]:
        identity = {
            "transformer": step.transformer,
            "connectors": step.connectors,
            "dtype": step.dtype,
            "lora": step.lora.model_dump(),
        }
        key = "facts:" + _key(identity)
        if key not in self._data:
            self._store(key, model_facts(step))
        return self._data[key]

    def _store(self, key: str, value: Any) -> None:
        """Keep `value`, merged into what other processes wrote meanwhile (a figure is the same
        whoever computes it: a lost race costs a recomputation, never a wrong figure)."""
        self._data = {**self._read(), **self._data, key: value}
        if self.path is not None:
            write_json(self.path, {"format": CACHE_FORMAT, "entries": self._data})


def _key(identity: dict[str, Any]) -> str:
    """What a cached figure depends on, with the library versions that run the step."""
    import diffusers
    import peft
    import torch

    versions = {"torch": torch.__version__, "diffusers": diffusers.__version__}
    return sha256_json({**_jsonable(identity), **versions, "peft": peft.__version__})


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return obj


# ------------------------------------------------------------------------ budgets and options


def parse_size(text: str) -> int:
    """'24GB', '24 GiB', '80' (GiB), '16384MiB' -> bytes. Cards are sold in binary gigabytes:
    GB and GiB both mean 2^30 bytes here."""
    match = re.fullmatch(r"\s*([\d.]+)\s*(gib|gb|g|mib|mb|m)?\s*", text.lower())
    if not match:
        raise UserError(f"--gpu {text!r}: give a memory size such as 24GB, 16GiB or 81920MiB")
    unit = MIB if (match[2] or "g").startswith("m") else GIB
    return int(float(match[1]) * unit)


@dataclass(frozen=True)
class Card:
    """The memory a plan must fit in."""

    name: str
    total: int

    @property
    def label(self) -> str:
        return f"{self.name} ({self.total / GIB:.1f} GiB)"


def detected_card() -> Card | None:
    """The CUDA card this process would train on (None: no CUDA GPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
    props = torch.cuda.get_device_properties(index)
    return Card(props.name, props.total_memory)


def options(
    setup: Setup, budget: int, cache: PlanCache | None = None, ram: int | None = None
) -> list[Plan]:
    """The settings that fit `budget`, fastest first (FASTEST_FIRST): per format and
    checkpointing setting, the fewest swapped blocks that fit. Checkpointing is only turned on,
    never off: a run configured with it keeps it. With `ram`, only settings whose host RAM fits
    it too (more swapped blocks cost host RAM: the first GPU fit may not be the one to use)."""
    checkpointing = (True,) if setup.step.checkpointing else (False, True)
    out = []
    for fmt in FASTEST_FIRST:
        if fmt == "nf4" and setup.step.lora.kind == "lokr":
            continue  # trainer/placement.py refuses LoKr on nf4
        for ckpt in checkpointing:
            swaps = range(setup.layers + 1) if ckpt else range(1)  # swap needs checkpointing
            for n in swaps:
                plan = make_plan(setup.vary(fmt, ckpt, n), cache)
                if plan.fits(budget):
                    if ram is None or plan.host_total <= ram:
                        out.append(plan)
                    break
    return out


def host_ram() -> int:
    """This machine's memory: what a run here can hold on the host."""
    import psutil

    return psutil.virtual_memory().total


def resolve_swap(setup: Setup, budget: int | None, cache: PlanCache | None = None) -> int:
    """`trainer.blocks_to_swap=auto`: the fewest swapped blocks that fit `budget` with the
    configured format and checkpointing (0 without a budget or when none fits)."""
    if budget is None or not setup.step.checkpointing:
        return 0
    for n in range(setup.layers + 1):
        if make_plan(replace(setup, blocks_to_swap=n), cache).fits(budget):
            return n
    return 0


def changes(plan: Plan, setup: Setup) -> str:
    """The overrides that turn `setup` into `plan`'s settings."""
    mine, theirs = setup.knobs(), plan.setup.knobs()
    return " ".join(f"{k}={_value(v)}" for k, v in theirs.items() if mine[k] != v) or "(as is)"


def _value(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


# ------------------------------------------------------------------------------- reports


def format_plan(plan: Plan) -> str:
    """The table by component, labelled as planned."""
    s, f = plan.setup, plan.facts
    step = s.step
    lines = [
        f"memory plan (planned, not measured): {s.label}, "
        f"transformer {f['transformer_params'] / 1e9:.2f} B + connectors "
        f"{f['connectors_params'] / 1e9:.2f} B params",
        f"  clip {s.clip}; batch {step.video[0]}; video latents {list(step.video[1:])}; "
        f"{step.text_tokens} text tokens",
        f"  adapter {step.lora.kind} rank {step.lora.rank} on {step.lora.targets} "
        f"({f['adapter_numel'] / 1e6:.1f} M params); {step.optimizer}; gradient checkpointing "
        f"{'on' if step.checkpointing else 'off'}; attention {step.attention}; base "
        f"{s.quantize}; {s.blocks_to_swap} of {s.layers} blocks swapped",
    ]
    traced = _traced(plan)
    if plan.gpu:
        lines += _table("GPU", plan.gpu)
    lines += _table("host RAM" if plan.gpu else "host RAM (the step runs on the CPU)", plan.host)
    lines.append(f"  (the step: {traced})")
    return "\n".join(lines)


def _traced(plan: Plan) -> str:
    layers = plan.traced.layers if plan.traced else ()
    if not layers:
        return "not traced: its activations are missing above"
    if len(layers) == 1:
        return "traced on fake tensors, every block"
    blocks = "/".join(map(str, layers))
    return f"traced on fake tensors at {blocks} blocks, extrapolated to {plan.setup.layers}"


def _table(title: str, terms: dict[str, int]) -> list[str]:
    width = max(len(k) for k in terms) + 2
    rows = [f"{title}{'GiB':>{width + 10 - len(title)}}"]
    rows += [f"  {k:<{width}}{v / GIB:8.2f}" for k, v in terms.items()]
    rows.append(f"  {'total':<{width}}{sum(terms.values()) / GIB:8.2f}")
    return rows


def format_options(setup: Setup, card: Card, fitting: list[Plan], current: Plan) -> str:
    """Whether the config fits `card`, and every setting that does, fastest first."""
    verdict = "fits" if current.fits(card.total) else "does NOT fit"
    lines = [
        f"on {card.label}: this config {verdict} (planned {current.gpu_total / GIB:.1f} GiB "
        f"GPU, {current.host_total / GIB:.1f} GiB host RAM)"
    ]
    if not fitting:
        lines.append("  no setting fits: " + NOTHING_FITS)
        return "\n".join(lines)
    lines.append(
        "settings that fit, fastest first (format none < int8 < nf4, then checkpointing off < "
        "on, then fewer swapped blocks):"
    )
    rows = [(changes(plan, setup), plan) for plan in fitting]
    width = max(len(text) for text, _ in rows) + 2
    lines += [
        f"  {text:<{width}}GPU {plan.gpu_total / GIB:5.1f} GiB   host RAM "
        f"{plan.host_total / GIB:5.1f} GiB"
        for text, plan in rows
    ]
    return "\n".join(lines)


NOTHING_FITS = (
    "lower lora.rank, trainer.batch_size or the clip size (curation.frames, curation.buckets)"
)


def one_line(plan: Plan) -> str:
    """The plan in a line, for a run that nothing refuses (the CPU)."""
    terms = plan.gpu or plan.host
    top = sorted(terms.items(), key=lambda kv: -kv[1])[:3]
    where = "GPU" if plan.gpu else "host RAM (CPU run)"
    parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in top)
    missing = "" if plan.traced else "; the step not traced: `ltx-lora plan` traces it"
    total = sum(terms.values()) / GIB
    return f"memory plan: peak {where} {total:.2f} GiB planned ({parts}{missing})"


# -------------------------------------------------------------------------- before training


def plan_training(
    cache_dir: Path,
    index: dict[str, Any],
    model_path: Path,
    model_cfg: ModelConfig,
    lora_cfg: LoraConfig,
    cfg: TrainerConfig,
    plan_cache: Path | None = None,
    card: Card | None = None,
) -> TrainerConfig:
    """The first thing `train` does: plan the run from the cache's largest sample, refuse a
    run that will not fit the GPU (naming the knob to turn), resolve blocks_to_swap=auto.
    On a machine without a CUDA GPU nothing is refused: the plan is printed in one line."""
    card = card or detected_card()
    device = "cuda" if card is not None else "cpu"
    latents = latents_from_cache(cache_dir, index, cfg.strategy)
    configs = model_configs(model_cfg, model_path)
    setup = make_setup(model_cfg, lora_cfg, cfg, configs, latents, device)
    cache = PlanCache(plan_cache)
    if getattr(cfg, "blocks_to_swap", 0) == "auto":
        n = resolve_swap(setup, card.total if card else None, cache)
        setup, cfg = replace(setup, blocks_to_swap=n), cfg.model_copy(update={"blocks_to_swap": n})
    plan = make_plan(setup, cache, trace=card is not None)  # on a CPU nothing is refused
    sharded = cfg.distributed == "fsdp2" and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if card is None or sharded or plan.fits(card.total):
        print(one_line(plan) + ("" if card is None else f" on {card.label}"))
        return cfg
    fitting = options(setup, card.total, cache, ram=host_ram())  # it runs on this machine
    fix = (
        f"set {changes(fitting[0], setup)} (planned {fitting[0].gpu_total / GIB:.1f} GiB GPU, "
        f"{fitting[0].host_total / GIB:.1f} GiB host RAM)"
        if fitting
        else f"no setting fits this GPU and this machine's {host_ram() / GIB:.0f} GiB of RAM: "
        + NOTHING_FITS
    )
    raise UserError(
        f"this run will not fit {card.label}: planned peak {plan.gpu_total / GIB:.1f} GiB; "
        f"{fix}; `ltx-lora plan` lists every option"
    )
