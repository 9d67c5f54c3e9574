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

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ltx.config import ModelConfig
from stagekit.errors import UserError
from stagekit.files import read_json, write_json
from stagekit.hashing import sha256_json
from trainer.config import LoraConfig, TrainerConfig
from trainer.plan_report import NOTHING_FITS, Card, changes, detected_card, host_ram, one_line
from trainer.plan_sizes import (
    GIB,
    MIB,
    Latents,
    base_bytes,
    block_bytes,
    format_label,
    latents_from_cache,
    model_configs,
    model_facts,
    optimizer_state,
)
from trainer.plan_trace import StepPeak, StepShape, step_peak

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
        references=latents.references if cfg.strategy == "multi_reference" else (),
        keyframe_interior=cfg.keyframe_interior if cfg.strategy == "keyframes" else 0,
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
    base = base_bytes(facts, setup.quantize, dtype_bytes)
    streamed = block_bytes(facts, setup.quantize, dtype_bytes)  # one swapped block
    n = setup.blocks_to_swap
    ring = min(RING, n) * streamed
    adapter = facts["adapter_bytes"] + optimizer_state(facts, setup.step.optimizer)
    workspace = (
        facts["largest_block_linear"] * dtype_bytes if setup.quantize != "none" else 0
    )  # one dequantised weight at a time
    device = {
        f"base weights ({format_label(setup.quantize, facts)})": base - n * streamed,
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


def resolve_swap(setup: Setup, budget: int | None, cache: PlanCache | None = None) -> int:
    """`trainer.blocks_to_swap=auto`: the fewest swapped blocks that fit `budget` with the
    configured format and checkpointing (0 without a budget or when none fits)."""
    if budget is None or not setup.step.checkpointing:
        return 0
    for n in range(setup.layers + 1):
        if make_plan(replace(setup, blocks_to_swap=n), cache).fits(budget):
            return n
    return 0


# ------------------------------------------------------------------------------- reports


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
