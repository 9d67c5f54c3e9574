"""An out-of-memory the memory plan did not foresee: one line with the plan's peak, the
measured one and the knob to turn; checkpoints are left as they are, so a re-run resumes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from stagekit.errors import UserError
from trainer import checkpoint

OUT_OF_MEMORY = (torch.cuda.OutOfMemoryError, getattr(torch, "OutOfMemoryError", MemoryError))
QUANTIZE_NEXT = {"none": "int8", "int8": "nf4", "fp8": "nf4"}  # less memory, in speed order


@contextlib.contextmanager
def stop_on_oom(
    progress: Any, run: Path, transformer: torch.nn.Module, planned: tuple[Any, ...]
) -> Iterator[None]:
    """An out-of-memory the plan did not foresee becomes one line: the plan's peak, the
    measured one, the knob to turn. Checkpoints are left as they are, so a re-run resumes."""
    try:
        yield
    except OUT_OF_MEMORY as e:
        raise _out_of_memory(progress.step + 1, run, transformer, planned) from e


def _out_of_memory(
    step: int, run: Path, transformer: torch.nn.Module, planned: tuple[Any, ...]
) -> UserError:
    cfg, model_cfg = planned[5], planned[3]
    if torch.cuda.is_available():
        measured = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB allocated on the GPU"
    else:
        import psutil

        measured = f"{psutil.Process().memory_info().rss / 2**30:.1f} GiB resident"
    plan = _planned_peak(*planned)
    kept = checkpoint.checkpoints(run)
    where = f"the last checkpoint, {kept[-1]}, is kept" if kept else "no checkpoint was written"
    layers = len(transformer.transformer_blocks)
    swapped = cfg.blocks_to_swap if isinstance(cfg.blocks_to_swap, int) else 0
    if not cfg.gradient_checkpointing:
        knob = "set trainer.gradient_checkpointing=true (a new run: add trainer.resume=false)"
    elif swapped < layers:
        more = min(layers, swapped + max(2, layers // 8))
        knob = f"set trainer.blocks_to_swap={more} or more (the run resumes from its checkpoint)"
    elif model_cfg.quantize in QUANTIZE_NEXT:
        fmt = QUANTIZE_NEXT[model_cfg.quantize]
        knob = f"set model.quantize={fmt} (a new run: add trainer.resume=false)"
    else:
        knob = "lower lora.rank, trainer.batch_size or the clip size (a new run)"
    return UserError(
        f"training ran out of memory at step {step} despite the memory plan: planned peak "
        f"{plan}, measured peak {measured}; {where}. To go on, {knob}"
    )


def _planned_peak(cache_dir, index, model_path, model_cfg, lora_cfg, cfg, plan_cache) -> str:
    """The plan's peak for this run, as `plan_training` computed it (its trace is cached)."""
    from trainer import plan as memory
    from trainer import plan_report as report
    from trainer import plan_sizes as sizes

    card = report.detected_card()
    try:
        latents = sizes.latents_from_cache(cache_dir, index, cfg.strategy)
        configs = sizes.model_configs(model_cfg, model_path)
        device = "cuda" if card is not None else "cpu"
        setup = memory.make_setup(model_cfg, lora_cfg, cfg, configs, latents, device)
        p = memory.make_plan(setup, memory.PlanCache(plan_cache), trace=card is not None)
    except Exception as e:  # the error must still say what ran out: the plan is a detail here
        return f"unknown ({type(e).__name__})"
    if p.gpu:
        return f"{p.gpu_total / 2**30:.1f} GiB GPU"
    return f"{p.host_total / 2**30:.1f} GiB host RAM (CPU run)"
