"""The training loop as the algorithm: per step, draw a batch, compute the loss and backward
(`trainer.grad_accum` times), average over processes, guard, clip, step, update the EMA; then log,
validate and checkpoint as configured. Everything it touches is a `Session`, built by
`trainer.train`; what carries from step to step is the `Progress`."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm import tqdm

from stagekit.errors import UserError
from trainer import checkpoint
from trainer.checkpoint_state import rng_state, set_rng_state
from trainer.config import TrainerConfig
from trainer.data import Batch, collate, drop_captions

VALIDATION_SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)  # fixed grid: comparable across runs


@dataclass
class Progress:
    """What the loop carries from step to step besides the weights."""

    step: int = 0
    epoch: int = 0
    index: int = 0
    log: list[dict[str, float]] = field(default_factory=list)
    window: list[float] = field(default_factory=list)
    history: list[float] = field(default_factory=list)
    loop_s: float = 0.0  # wall time of the steps run in this process
    data_wait_s: float = 0.0  # of which: waiting for the next batch
    # each modality's loss over the logging window (`video`, `audio`), beside `window`
    modality_window: dict[str, list[float]] = field(default_factory=dict)

    def record(self, loss: float, parts: dict[str, float]) -> None:
        """One step's loss, and each modality's."""
        self.history.append(loss)
        self.window.append(loss)
        for name, value in parts.items():
            self.modality_window.setdefault(name, []).append(value)

    def close_window(self, step: int, lr: float) -> None:
        """A log row of means over the window: one step's loss mostly measures its random σ."""
        means = {f"loss_{m}": sum(v) / len(v) for m, v in self.modality_window.items()}
        loss = sum(self.window) / len(self.window)
        self.log.append({"step": step, "loss": loss, **means, "lr": lr})
        self.window.clear()
        self.modality_window.clear()


@dataclass
class Session:
    """What the loop works with, built once per run (trainer.train)."""

    accelerator: Accelerator
    cfg: TrainerConfig
    seed: int
    strategy: Any  # trainer.strategies
    denoiser: dict[str, torch.nn.Module]
    scheduler: Any
    params: dict[str, torch.nn.Parameter]  # the adapter's
    optimizer: Any
    lr_schedule: Any
    generator: torch.Generator
    ema: dict[str, torch.Tensor] | None
    run: Path  # the checkpoint folder
    empty_text: dict[str, torch.Tensor] | None  # what caption dropout swaps in
    sampler: Any  # trainer.runtime.ValidationSampler
    progress: Progress = field(default_factory=Progress)

    def save(self, step: int) -> None:
        state = checkpoint_state(
            self.progress, self.params, self.optimizer, self.lr_schedule, self.generator, self.ema
        )
        checkpoint.save(self.run, step, state, self.cfg.keep_checkpoints)

    def resume(self) -> None:
        """Continue from the newest intact checkpoint, if the run has one."""
        if (saved := checkpoint.load_latest(self.run)) is not None:
            self.progress = restore(
                saved, self.params, self.optimizer, self.lr_schedule, self.generator, self.ema
            )
            print(f"train: resuming from step {self.progress.step} ({self.run})")


def run_steps(s: Session, stream: Iterator[tuple[int, int, Batch]]) -> None:
    """Steps `progress.step + 1 .. trainer.max_steps`."""
    s.denoiser["transformer"].train()
    bar = tqdm(
        range(s.progress.step + 1, s.cfg.max_steps + 1),
        desc="train",
        unit="step",
        initial=s.progress.step,
        total=s.cfg.max_steps,
    )
    for step in bar:
        started = time.perf_counter()
        loss, parts = _accumulate(s, stream, step)
        loss = _average(loss, s.params, s.accelerator)
        _check_loss(loss, s.progress.history, step, s.run, s.cfg)  # before the bad update lands
        grad_norm = s.accelerator.clip_grad_norm_(list(s.params.values()), s.cfg.grad_clip)
        s.optimizer.step()
        s.lr_schedule.step()
        s.optimizer.zero_grad(set_to_none=True)
        if s.ema is not None:
            _ema_update(s.ema, s.params, s.cfg.ema_decay)
        s.progress.step = step
        s.progress.loop_s += time.perf_counter() - started
        s.progress.record(loss, _mean_over_processes(parts, s.accelerator))
        _after_step(s, step, float(grad_norm), bar)


def _accumulate(
    s: Session, stream: Iterator[tuple[int, int, Batch]], step: int
) -> tuple[float, dict[str, float]]:
    """`grad_accum` micro-batches: loss and backward; the step's loss and each modality's."""
    cfg, loss, parts = s.cfg, 0.0, {}
    for micro_index in range(cfg.grad_accum):
        waited = time.perf_counter()
        s.progress.epoch, s.progress.index, batch = next(stream)
        batch = drop_captions(batch, s.empty_text, cfg.caption_dropout, s.seed, step, micro_index)
        s.progress.data_wait_s += time.perf_counter() - waited
        micro_parts: dict[str, float] = {}
        with s.accelerator.autocast():
            micro = (
                s.strategy.loss(s.denoiser, s.scheduler, batch, cfg, s.generator, parts=micro_parts)
                / cfg.grad_accum
            )
        s.accelerator.backward(micro)
        loss += micro.item()
        for name, value in micro_parts.items():
            parts[name] = parts.get(name, 0.0) + value / cfg.grad_accum
    return loss, parts


def _after_step(s: Session, step: int, grad_norm: float, bar: tqdm) -> None:
    """Log a window's means, render a validation sample, write a checkpoint: as configured."""
    cfg, main = s.cfg, s.accelerator.is_main_process
    if step % cfg.log_every == 0 or step == cfg.max_steps:
        s.progress.close_window(step, s.lr_schedule.get_last_lr()[0])
        bar.set_postfix(loss=f"{s.progress.log[-1]['loss']:.4f}")
        logged = {k: v for k, v in s.progress.log[-1].items() if k != "step"}
        s.accelerator.log({**logged, "grad_norm": grad_norm}, step=step)
    if cfg.validation_every and step % cfg.validation_every == 0 and main:
        metrics = s.sampler.run(step, s.strategy, s.denoiser, s.scheduler)
        s.accelerator.log(metrics, step=step)
    if step % cfg.checkpoint_every == 0 and step < cfg.max_steps and main:
        s.save(step)


def _average(loss: float, params: dict[str, torch.nn.Parameter], accelerator: Accelerator) -> float:
    """Average the adapter's gradients (one flat all-reduce) and the loss over processes."""
    if accelerator.num_processes == 1:
        return loss
    grads = [p.grad for p in params.values()]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
    return accelerator.reduce(torch.tensor([loss]), reduction="mean").item()


def _mean_over_processes(parts: dict[str, float], accelerator: Accelerator) -> dict[str, float]:
    """Each modality's loss of this step, averaged over processes like the loss itself."""
    if accelerator.num_processes == 1 or not parts:
        return parts
    names = sorted(parts)
    values = accelerator.reduce(torch.tensor([parts[n] for n in names]), reduction="mean")
    return dict(zip(names, values.tolist(), strict=True))


def lr_factor(cfg: TrainerConfig):
    """Linear warmup, then cosine or linear decay to 10 % of the peak, or constant."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        if cfg.lr_schedule == "constant":
            return 1.0
        if cfg.lr_schedule == "linear":
            return 1.0 - 0.9 * progress
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@torch.no_grad()
def validation_loss(
    strategy,
    denoiser: dict[str, torch.nn.Module],
    scheduler: Any,
    samples: list,
    cfg: TrainerConfig,
    seed: int,
) -> float | None:
    """Mean held-out loss over a fixed σ grid with fixed noise: deterministic for given weights."""
    if not samples:
        return None
    denoiser["transformer"].eval()
    losses = []
    for i, sample in enumerate(samples):
        for sigma in VALIDATION_SIGMAS:
            gen = torch.Generator().manual_seed(seed * 1000 + i)
            s = torch.full((1,), sigma)
            losses.append(
                strategy.loss(
                    denoiser, scheduler, collate([sample]), cfg, gen, sigmas=(s, s)
                ).item()
            )
    return sum(losses) / len(losses)


def _check_loss(
    loss: float, history: list[float], step: int, run: Path, cfg: TrainerConfig
) -> None:
    """Stop on a non-finite loss or a spike far above the recent median."""
    recent = history[-50:]
    spike = len(recent) >= 10 and loss > cfg.loss_spike_factor * statistics.median(recent)
    if math.isfinite(loss) and not spike:
        return
    kept = checkpoint.checkpoints(run)
    where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was written"
    what = (
        "is not finite"
        if not math.isfinite(loss)
        else (f"jumped above {cfg.loss_spike_factor}x its recent median")
    )
    raise UserError(
        f"training stopped at step {step}: the loss ({loss:.4g}) {what}; {where}. "
        "Lower trainer.lr, or check the clips and captions of this dataset"
    )


def _ema_update(
    ema: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter], decay: float
) -> None:
    with torch.no_grad():
        for name, p in params.items():
            ema[name].lerp_(p.detach(), 1 - decay)


def checkpoint_state(
    progress: Progress, params, optimizer, lr_schedule, generator, ema
) -> dict[str, Any]:
    """Everything that decides the next step (trainer.checkpoint)."""
    return {
        "progress": vars(progress).copy(),
        "params": {n: p.detach().clone() for n, p in params.items()},
        "optimizer": optimizer.state_dict(),
        "lr_schedule": lr_schedule.state_dict(),
        "generator": generator.get_state(),
        "rng": rng_state(),
        "ema": ema,
    }


def restore(saved: dict[str, Any], params, optimizer, lr_schedule, generator, ema) -> Progress:
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved["params"][name])
        if ema is not None and saved["ema"] is not None:
            for name, t in ema.items():
                t.copy_(saved["ema"][name])
    optimizer.load_state_dict(saved["optimizer"])
    lr_schedule.load_state_dict(saved["lr_schedule"])
    generator.set_state(saved["generator"])
    set_rng_state(saved["rng"])
    return Progress(**saved["progress"])
