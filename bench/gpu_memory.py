"""`python -m bench.gpu_memory [--steps N] [--configs bf16 int8 ...]`: LoRA training memory and
speed of the full-size LTX-2.0 transformer on one GPU, beside the memory plan's prediction.

Five configs (issue 16): bf16; int8; nf4; int8 + block swap for a 24 GB budget; nf4 + block
swap for a 16 GB budget. The swapped block counts are the plan's (`trainer.plan.resolve_swap`)
and the budget is enforced with `torch.cuda.set_per_process_memory_fraction`, so a config that
reports figures really ran inside it. The transformer (19 B, random weights) is made on the
device block by block, each block Linear quantised as it is made; swapped blocks' Linear
weights go to pinned host memory: nothing full-size passes through host RAM but the swapped
set. Rank-32 LoRA on the video attention (`trainer.placement.attach_adapter`), 121x512x768 with
audio, gradient checkpointing, AdamW on the adapter. Each config runs in its own process so
its peaks are its own: peak allocated and reserved GPU memory, peak host RSS (VmHWM), the
median seconds per step after warm-up. Without a CUDA GPU it says so and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bench.gpu_transformer import Workload, full, make_inputs, train_step

GIB = 1 << 30
NO_GPU = (
    "bench.gpu_memory needs a CUDA GPU (80 GB for the bf16 config): none is visible here, so "
    "nothing was measured. Run it on a GPU machine: python -m bench.gpu_memory"
)
CONFIG_TIMEOUT_S = 150  # one config: build, warm-up and timed steps (8 minutes for five)


@dataclass(frozen=True)
class Config:
    """One measured setting: the base's format and the GPU budget it must fit (None: the card)."""

    name: str
    quantize: str  # model.quantize
    budget_gb: int | None = None  # enforced; blocks_to_swap is the plan's fewest that fit


CONFIGS = (
    Config("bf16", "none"),
    Config("int8", "int8"),
    Config("nf4", "nf4"),
    Config("int8+swap", "int8", 24),
    Config("nf4+swap", "nf4", 16),
)
BY_NAME = {c.name: c for c in CONFIGS}


# ------------------------------------------------------------------------------- the model


def build_base(
    w: Workload,
    quantize: str,
    device: str | torch.device,
    dtype: torch.dtype,
    *,
    host_blocks: int = 0,
) -> torch.nn.Module:
    """The transformer built on meta, then made piece by piece on `device` with random weights:
    each block's Linear layers are quantised (`trainer.quantize.quantize_linear`) as soon as the
    block exists, and those of the last `host_blocks` blocks go to the host (the swapped set)."""
    from diffusers import LTX2VideoTransformer3DModel

    from trainer.quantize import quantizable, quantize_linear

    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = LTX2VideoTransformer3DModel(**w.transformer)
    finally:
        torch.set_default_dtype(default)
    for name, p in list(model.named_parameters(recurse=False)):  # the scale-shift tables
        setattr(model, name, torch.nn.Parameter(_random_like(name, p, device)))
    for name, child in model.named_children():
        if name != "transformer_blocks":
            _materialise(child, device)
    first_on_host = len(model.transformer_blocks) - host_blocks
    for i, block in enumerate(model.transformer_blocks):
        _materialise(block, device)
        for name, linear in list(block.named_modules()):
            if not quantizable(f"transformer_blocks.{i}.{name}", linear):
                continue
            placed = linear if quantize == "none" else quantize_linear(linear, quantize, device)
            if i >= first_on_host:
                placed = placed.to("cpu")
            parent, _, child = name.rpartition(".")
            setattr(block.get_submodule(parent), child, placed)
    return model


def _materialise(module: torch.nn.Module, device: str | torch.device) -> None:
    module.to_empty(device=device)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(_random_like(name, p, device))


def _random_like(name: str, p: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Weights ~ N(0, 0.02), biases 0, norm scales 1: what an initialised model looks like."""
    out = torch.empty(p.shape, dtype=p.dtype, device=device)
    if p.dim() == 1 and name.endswith("bias"):
        return out.zero_()
    if p.dim() == 1 and name.endswith("weight"):
        return out.fill_(1.0)
    return out.normal_(0.0, 0.02)


def prepare(
    w: Workload,
    quantize: str,
    device: str | torch.device,
    dtype: torch.dtype,
    *,
    blocks_to_swap: int = 0,
) -> tuple[torch.nn.Module, dict[str, torch.nn.Parameter], Any]:
    """The model as `ltx-lora train` places it: base, adapter, checkpointing, block swap (None
    for 0 blocks), the rest moved to `device`. Returns the model, its adapter, the swapper."""
    from trainer.config import LoraConfig
    from trainer.placement import attach_adapter
    from trainer.swap import attach_swap

    model = build_base(w, quantize, device, dtype, host_blocks=blocks_to_swap)
    params = attach_adapter(model, LoraConfig(rank=w.rank, alpha=w.rank, targets=w.targets))
    if w.checkpointing:
        model.enable_gradient_checkpointing()
    swap = attach_swap(model, blocks_to_swap, torch.device("cpu"), torch.device(device))
    return model.to(device).train(), params, swap


# -------------------------------------------------------------------------------- the plan


def plan_setup(w: Workload, quantize: str, device: str, dtype: str = "bfloat16") -> Any:
    """The memory plan's input for `w` (the same shapes, adapter, checkpointing, format)."""
    from ltx.config import ModelConfig
    from ltx.specs import TINY
    from trainer import plan
    from trainer import plan_sizes as sizes
    from trainer.config import LoraConfig, TrainerConfig

    source = "tiny" if w.spec is TINY else "diffusers"
    model_cfg = ModelConfig(name=f"{source} 2.0", source=source, dtype=dtype, quantize=quantize)
    lora = LoraConfig(rank=w.rank, alpha=w.rank, targets=w.targets)
    cfg = TrainerConfig(gradient_checkpointing=w.checkpointing, batch_size=w.batch)
    configs = sizes.model_configs(model_cfg)
    latents = sizes.latents_for_clip(
        model_cfg, configs["transformer"], w.frames, w.height, w.width, w.fps, True
    )
    return plan.make_setup(model_cfg, lora, cfg, configs, latents, device)


def planned(config: Config, w: Workload, cache: Any) -> dict[str, Any]:
    """The plan's swapped blocks for `config`'s budget and its predicted peaks (bytes):
    allocated (the device terms), reserved (+ fragmentation), host RSS. The bench makes its
    weights on the device and feeds the transformer its text directly, so the plan's loader
    and text-connector terms are left out of what is compared."""
    from trainer import plan

    setup = plan_setup(w, config.quantize, "cuda")
    swap = plan.resolve_swap(setup, config.budget_gb * GIB, cache) if config.budget_gb else 0
    p = plan.make_plan(replace(setup, blocks_to_swap=swap), cache)
    gpu = {k: v for k, v in p.gpu.items() if not k.startswith("text connectors")}
    context = sum(v for k, v in gpu.items() if k.startswith("CUDA context"))
    fragmentation = sum(v for k, v in gpu.items() if k.startswith("allocator fragmentation"))
    allocated = sum(gpu.values()) - context - fragmentation
    host = sum(v for k, v in p.host.items() if not k.startswith("loader"))
    return {
        "blocks_to_swap": swap,
        "plan_allocated": allocated,
        "plan_reserved": allocated + fragmentation,
        "plan_gpu_total": p.gpu_total,
        "plan_host": host,
        "plan_fits": p.fits(config.budget_gb * GIB) if config.budget_gb else True,
    }


# --------------------------------------------------------------------------- one config


def peak_rss() -> int:
    """This process's peak resident memory (VmHWM), bytes."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import psutil

    return psutil.Process().memory_info().rss


def measure(config: Config, blocks_to_swap: int, steps: int, warmup: int) -> dict[str, Any]:
    """Build, warm up, time `steps` steps of `config` on the GPU; the peaks of this process."""
    if config.budget_gb:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, config.budget_gb * GIB / total))
    w = full("2.0")
    started = time.perf_counter()
    model, params, _swap = prepare(
        w, config.quantize, "cuda", torch.bfloat16, blocks_to_swap=blocks_to_swap
    )
    torch.cuda.synchronize()
    build_s = time.perf_counter() - started
    optimizer = torch.optim.AdamW(list(params.values()), lr=1e-4)
    inputs = make_inputs(w, model, "cuda")
    times = []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(model, inputs, optimizer)
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {
        "config": config.name,
        "blocks_to_swap": blocks_to_swap,
        "build_s": build_s,
        "step_s": statistics.median(times),
        "steps": len(times),
        "allocated": torch.cuda.max_memory_allocated(),
        "reserved": torch.cuda.max_memory_reserved(),
        "host_rss": peak_rss(),
    }


def run_one(config: Config, blocks_to_swap: int, steps: int, warmup: int) -> dict[str, Any]:
    """`measure` in a fresh process (its peaks are its own); an error or OOM is reported."""
    command = [sys.executable, "-m", "bench.gpu_memory", "--one", config.name]
    command += ["--swap", str(blocks_to_swap), "--steps", str(steps), "--warmup", str(warmup)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CONFIG_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return {"config": config.name, "error": f"over {CONFIG_TIMEOUT_S} s"}
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode != 0 or not lines:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"config": config.name, "error": f"exit {done.returncode}: {said[:200]}"}
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------ reports


def format_table(rows: list[dict[str, Any]], device: str) -> str:
    """Measured figures and the plan's beside them (GiB), then the issue's ratios."""
    g = lambda n: f"{n / GIB:.1f}"  # noqa: E731
    lines = [
        f"device: {device}, torch {torch.__version__}; LTX-2.0 19B, LoRA rank 32 video attention, "
        "121x512x768 with audio, gradient checkpointing",
        "| config | swapped blocks | peak allocated (plan) | reserved (plan) | host RSS (plan) "
        "| s/step | build s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['config']} | {r.get('blocks_to_swap', '')} | did not run: "
                f"{r['error']} | | | | |"
            )
            continue
        lines.append(
            f"| {r['config']} | {r['blocks_to_swap']} | {g(r['allocated'])} "
            f"({g(r['plan_allocated'])}) | {g(r['reserved'])} ({g(r['plan_reserved'])}) | "
            f"{g(r['host_rss'])} ({g(r['plan_host'])}) | {r['step_s']:.2f} | {r['build_s']:.0f} |"
        )
    return "\n".join([*lines, "", *ratios(rows)])


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets as measured ratios (only for configs that ran)."""
    ok = {r["config"]: r for r in rows if "error" not in r}
    out = []

    def step(a: str, b: str, target: float) -> None:
        if a in ok and b in ok:
            x = ok[a]["step_s"] / ok[b]["step_s"]
            out.append(f"{a} step / {b} step: {x:.2f} (target <= {target})")

    step("int8", "bf16", 1.25)
    step("int8+swap", "int8", 1.3)
    step("nf4+swap", "nf4", 1.3)
    for r in ok.values():
        c = BY_NAME[r["config"]]
        if c.budget_gb:
            out.append(
                f"{c.name}: reserved {r['reserved'] / GIB:.1f} GiB within {c.budget_gb} GB: "
                f"{r['reserved'] <= c.budget_gb * GIB}"
            )
        out.append(
            f"{c.name}: plan / measured: allocated {r['plan_allocated'] / r['allocated']:.3f} "
            f"(target within 5 %), reserved {r['plan_reserved'] / r['reserved']:.3f}, host RSS "
            f"{r['plan_host'] / r['host_rss']:.3f} (within 10 %)"
        )
    return out


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_memory", description=__doc__)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per config (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--configs", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    parser.add_argument("--one", choices=list(BY_NAME), help=argparse.SUPPRESS)  # a child
    parser.add_argument("--swap", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    if args.one:
        print(json.dumps(measure(BY_NAME[args.one], args.swap, args.steps, args.warmup)))
        return 0
    from trainer.plan import PlanCache

    device = torch.cuda.get_device_name(0)
    cache = PlanCache(Path(tempfile.gettempdir()) / f"gpu-memory-plan-{os.getuid()}.json")
    rows = []
    for name in args.configs:
        config = BY_NAME[name]
        print(f"planning {name} ...", file=sys.stderr)
        plan = planned(config, full("2.0"), cache)
        print(f"running {name} ({plan['blocks_to_swap']} blocks swapped) ...", file=sys.stderr)
        rows.append({**plan, **run_one(config, plan["blocks_to_swap"], args.steps, args.warmup)})
    print(format_table(rows, device))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
