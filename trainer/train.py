"""`ltx-lora train`: a PEFT LoRA on the LTX-2 transformer, trained on cached latents.

Checkpoints every `trainer.checkpoint_every` steps hold everything that decides the next step
(adapter, optimiser, schedule, RNG, data position, EMA, log), so a killed run resumes to the
same losses and the same final weights.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from tqdm import tqdm

from ltx.config import ModelConfig
from ltx.loading import load_components, load_pipeline
from stagekit.errors import UserError
from stagekit.files import atomic_dir, read_json, write_json, write_jsonl, write_text
from stagekit.hashing import sha256_json
from stagekit.stage import load_record, save_record
from trainer import checkpoint
from trainer.cache import EMPTY_PROMPT, INDEX
from trainer.config import LoraConfig, TrainerConfig
from trainer.data import Batch, BatchOrder, collate, drop_captions, load_split
from trainer.export import export_adapter, verify_export
from trainer.placement import check_placement, place, place_connectors
from trainer.plan import plan_training
from trainer.runtime import (
    SAMPLES_DIR,
    ValidationSampler,
    cache_has_audio,
    check_cache,
    check_inputs,
    empty_prompt,
    make_optimizer,
    mark_failed,
    own_sharding,
    start_trackers,
    tracker_names,
)
from trainer.strategies import get_strategy, reference_downscale_factor, trained_modality

VALIDATION_SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)  # fixed grid: comparable across runs
# settings that change how a run is kept or laid out, never what it computes (like the number
# of processes, ddp and fsdp2 train the same adapter, and resume each other's checkpoints)
NOT_IN_FINGERPRINT = {
    "resume",
    "checkpoint_every",
    "keep_checkpoints",
    "trackers",
    "distributed",
    "blocks_to_swap",  # where the frozen base lives: the same adapter, bit for bit (tested)
}


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


@dataclass(frozen=True)
class Job:
    """One training request: what it reads, what it trains, where it writes, its identity."""

    cache_dir: Path
    out_dir: Path
    model_path: Path
    model_cfg: ModelConfig
    lora: LoraConfig
    cfg: TrainerConfig
    seed: int
    trigger: str
    lineage: dict[str, str]
    resolved_config: dict[str, Any]
    fingerprint: str


def train(
    cache_dir: Path,
    out_dir: Path,
    model_path: Path,
    model_cfg: ModelConfig,
    lora_cfg: LoraConfig,
    cfg: TrainerConfig,
    *,
    seed: int,
    trigger: str,
    lineage: dict[str, str],
    resolved_config: dict[str, Any],
    checkpoint_root: Path | None = None,
    plan_cache: Path | None = None,
) -> dict[str, Any]:
    """Train (resuming a matching unfinished run), export, verify; skip if already done.
    `plan_cache`: where the memory plan keeps its traced figures (None: not kept)."""
    index = read_json(cache_dir / INDEX)
    check_cache(index, cache_dir, model_path, model_cfg.ltx_version)
    empty_text = empty_prompt(cache_dir, index) if cfg.caption_dropout > 0 else None
    settings = {
        "cache": sha256_json({k: e["sha256"] for k, e in index["entries"].items()}),
        "model": lineage["base_model_hash"],
        "lora": lora_cfg.model_dump(),
        "trainer": cfg.model_dump(exclude=NOT_IN_FINGERPRINT),
        "seed": seed,
        "trigger": trigger,
    }
    if empty_text is not None:  # what caption dropout swaps in is an input too
        settings["empty_prompt"] = index[EMPTY_PROMPT]["sha256"]
    if model_cfg.quantize != "none":  # the base the adapter learns against
        settings["quantize"] = model_cfg.quantize
    fingerprint = sha256_json(settings)
    if (record := load_record(out_dir, fingerprint)) is not None:
        return {**record, "skipped": True}
    # before anything loads: refuse a run that will not fit the GPU; resolve blocks_to_swap=auto
    cfg = plan_training(cache_dir, index, model_path, model_cfg, lora_cfg, cfg, plan_cache)
    trackers = tracker_names(cfg)
    with own_sharding(cfg):  # the trainer shards (fsdp2), never Accelerate
        accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),
            mixed_precision=cfg.mixed_precision,
            log_with=trackers or None,
            # MLflow: the artifact location of a new experiment; W&B: its offline run folder
            project_config=ProjectConfiguration(
                project_dir=str(out_dir.parent / "tracking"),
                logging_dir=str(out_dir.parent / "tracking"),
            ),
        )
    check_inputs(cfg, cache_dir, index, accelerator.device)
    check_placement(model_cfg, lora_cfg, cfg, accelerator.device)
    run = _prepare_run(
        accelerator,
        checkpoint_root or out_dir.parent / "checkpoints",
        fingerprint,
        settings,
        cfg.resume,
    )

    torch.manual_seed(seed)  # the adapter's initial values
    # a run that trains no audio puts no adapter on audio modules (they would learn nothing)
    modality = trained_modality(cfg.strategy, cache_has_audio(cache_dir, index))
    processes = accelerator.num_processes
    placed = place(model_path, model_cfg, lora_cfg, cfg, accelerator.device, processes, modality)
    transformer, params = placed.transformer, placed.params
    comps = load_components(model_path, ["connectors", "scheduler"], model_cfg.dtype)
    scheduler = comps["scheduler"]
    denoiser = {
        "transformer": transformer,
        "connectors": place_connectors(comps["connectors"], accelerator.device),
    }
    optimizer = make_optimizer(list(params.values()), cfg, accelerator.device)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
    optimizer = accelerator.prepare(optimizer)
    ema = {n: p.detach().clone() for n, p in params.items()} if cfg.ema_decay else None
    generator = torch.Generator().manual_seed(seed)

    progress = Progress()
    if (saved := checkpoint.load_latest(run)) is not None:
        progress = _restore(saved, params, optimizer, lr_schedule, generator, ema)
        print(f"train: resuming from step {progress.step} ({run})")

    strategy, main = get_strategy(cfg.strategy), accelerator.is_main_process
    if trackers:
        start_trackers(accelerator, lineage, fingerprint, lora_cfg, cfg, seed)
    planned = (cache_dir, index, model_path, model_cfg, lora_cfg, cfg, plan_cache)
    # a run that raises ends FAILED in the trackers; an out-of-memory names the knob to turn
    with mark_failed(accelerator), _stop_on_oom(progress, run, transformer, planned):
        sampler = ValidationSampler(cache_dir, index, model_path, model_cfg, run, cfg, seed)
        order = BatchOrder(
            load_split(cache_dir, "train"),
            cfg.batch_size,
            seed,
            accelerator.process_index,
            accelerator.num_processes,
        )
        stream = order.stream(progress.epoch, progress.index)
        transformer.train()
        bar = tqdm(
            range(progress.step + 1, cfg.max_steps + 1),
            desc="train",
            unit="step",
            initial=progress.step,
            total=cfg.max_steps,
        )
        for step in bar:
            loss, started, parts = 0.0, time.perf_counter(), {}
            for micro_index in range(cfg.grad_accum):
                waited = time.perf_counter()
                progress.epoch, progress.index, batch = next(stream)
                batch = drop_captions(
                    batch, empty_text, cfg.caption_dropout, seed, step, micro_index
                )
                progress.data_wait_s += time.perf_counter() - waited
                micro_parts: dict[str, float] = {}
                with accelerator.autocast():
                    micro = (
                        strategy.loss(denoiser, scheduler, batch, cfg, generator, parts=micro_parts)
                        / cfg.grad_accum
                    )
                accelerator.backward(micro)
                loss += micro.item()
                for name, value in micro_parts.items():
                    parts[name] = parts.get(name, 0.0) + value / cfg.grad_accum
            loss = _average(loss, params, accelerator)
            _check_loss(loss, progress.history, step, run, cfg)  # before the bad update lands
            grad_norm = accelerator.clip_grad_norm_(list(params.values()), cfg.grad_clip)
            optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                _ema_update(ema, params, cfg.ema_decay)
            progress.step = step
            progress.loop_s += time.perf_counter() - started
            progress.record(loss, _mean_over_processes(parts, accelerator))
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                progress.close_window(step, lr_schedule.get_last_lr()[0])
                bar.set_postfix(loss=f"{progress.log[-1]['loss']:.4f}")
                logged = {k: v for k, v in progress.log[-1].items() if k != "step"}
                accelerator.log({**logged, "grad_norm": float(grad_norm)}, step=step)
            if cfg.validation_every and step % cfg.validation_every == 0 and main:
                metrics = sampler.run(step, strategy, denoiser, scheduler)
                accelerator.log(metrics, step=step)
            if step % cfg.checkpoint_every == 0 and step < cfg.max_steps and main:
                state = _state(progress, params, optimizer, lr_schedule, generator, ema)
                checkpoint.save(run, step, state, cfg.keep_checkpoints)

        rank_diff = _ranks_agree(params, accelerator)
        layout = placed.layout()
        if not main:
            accelerator.wait_for_everyone()
            return {"rank": accelerator.process_index, "skipped": False}
        # the main process goes on alone: validate and export a whole copy
        transformer, params = placed.whole()
        denoiser = {**denoiser, "transformer": transformer}
        val_loss = validation_loss(
            strategy, denoiser, scheduler, load_split(cache_dir, "validation"), cfg, seed
        )
        if val_loss is not None:
            accelerator.log({"val_loss": val_loss}, step=progress.step)
        job = Job(
            cache_dir,
            out_dir,
            model_path,
            model_cfg,
            lora_cfg,
            cfg,
            seed,
            trigger,
            lineage,
            resolved_config,
            fingerprint,
        )
        probe_batch = strategy.prepare(collate([order.samples[0]]))
        summary = _export(
            job,
            transformer,
            params,
            ema,
            progress,
            val_loss,
            probe_batch,
            {
                "processes": accelerator.num_processes,
                "rank_weight_max_diff": rank_diff,
                **({"distributed": cfg.distributed, **layout} if placed.sharded else {}),
            },
            run / SAMPLES_DIR,
        )
        for tracker in accelerator.trackers:  # not end_training(): it destroys the process group
            tracker.finish()
        checkpoint.mark_complete(run)
        accelerator.wait_for_everyone()
        return summary


def _prepare_run(
    accelerator: Accelerator, root: Path, fingerprint: str, settings: dict[str, Any], resume: bool
) -> Path:
    """The main process checks and creates the checkpoint folder; the others wait for it."""
    if accelerator.is_main_process:
        checkpoint.prepare_run(root, fingerprint, settings, resume)
    accelerator.wait_for_everyone()
    return checkpoint.run_dir(root, fingerprint)


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


def _ranks_agree(params: dict[str, torch.nn.Parameter], accelerator: Accelerator) -> float:
    """Largest difference between any process's adapter and the main one's (0 when in sync)."""
    if accelerator.num_processes == 1:
        return 0.0
    import torch.distributed as dist

    flat = torch.cat([p.detach().reshape(-1) for p in params.values()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    if diff.item() > 0:
        raise RuntimeError(f"processes diverged: adapter weights differ by {diff.item():.3g}")
    return diff.item()


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


OUT_OF_MEMORY = (torch.cuda.OutOfMemoryError, getattr(torch, "OutOfMemoryError", MemoryError))
QUANTIZE_NEXT = {"none": "int8", "int8": "nf4", "fp8": "nf4"}  # less memory, in speed order


@contextlib.contextmanager
def _stop_on_oom(
    progress: Progress, run: Path, transformer: torch.nn.Module, planned: tuple[Any, ...]
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

    card = memory.detected_card()
    try:
        latents = memory.latents_from_cache(cache_dir, index, cfg.strategy)
        configs = memory.model_configs(model_cfg, model_path)
        device = "cuda" if card is not None else "cpu"
        setup = memory.make_setup(model_cfg, lora_cfg, cfg, configs, latents, device)
        p = memory.make_plan(setup, memory.PlanCache(plan_cache), trace=card is not None)
    except Exception as e:  # the error must still say what ran out: the plan is a detail here
        return f"unknown ({type(e).__name__})"
    if p.gpu:
        return f"{p.gpu_total / 2**30:.1f} GiB GPU"
    return f"{p.host_total / 2**30:.1f} GiB host RAM (CPU run)"


def _ema_update(
    ema: dict[str, torch.Tensor], params: dict[str, torch.nn.Parameter], decay: float
) -> None:
    with torch.no_grad():
        for name, p in params.items():
            ema[name].lerp_(p.detach(), 1 - decay)


def _state(progress: Progress, params, optimizer, lr_schedule, generator, ema) -> dict[str, Any]:
    return {
        "progress": vars(progress).copy(),
        "params": {n: p.detach().clone() for n, p in params.items()},
        "optimizer": optimizer.state_dict(),
        "lr_schedule": lr_schedule.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "ema": ema,
    }


def _restore(saved: dict[str, Any], params, optimizer, lr_schedule, generator, ema) -> Progress:
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved["params"][name])
        if ema is not None and saved["ema"] is not None:
            for name, t in ema.items():
                t.copy_(saved["ema"][name])
    optimizer.load_state_dict(saved["optimizer"])
    lr_schedule.load_state_dict(saved["lr_schedule"])
    generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    return Progress(**saved["progress"])


def _export(
    job: Job,
    model: torch.nn.Module,
    params: dict[str, torch.nn.Parameter],
    ema: dict[str, torch.Tensor] | None,
    progress: Progress,
    val_loss: float | None,
    probe_batch: Batch,
    distributed: dict[str, Any],
    samples: Path,
) -> dict[str, Any]:
    """Adapters (final and EMA) verified through the pipeline, logs, train.json, stage record."""
    pipe = load_pipeline(job.model_path, job.model_cfg.dtype)
    metadata = _header(job, probe_batch)
    model.eval()
    with atomic_dir(job.out_dir) as tmp:
        files = export_adapter(model, tmp / "adapter", metadata)
        hashes = verify_export(pipe, model, files, probe_batch)
        if ema is not None:
            with _weights(params, ema):
                files = export_adapter(model, tmp / "adapter", metadata, stem="adapter_ema")
                hashes |= verify_export(pipe, model, files, probe_batch)
        write_jsonl(tmp / "metrics.jsonl", progress.log)
        if samples.is_dir():  # validation sample videos, written during training
            shutil.copytree(samples, tmp / SAMPLES_DIR)
        write_text(tmp / "config.yaml", yaml.safe_dump(job.resolved_config, sort_keys=False))
        final = {
            "loss": progress.log[-1]["loss"],
            **({"val_loss": val_loss} if val_loss is not None else {}),
            "step_s": progress.loop_s / max(1, len(progress.history)),
            "data_wait_fraction": progress.data_wait_s / max(progress.loop_s, 1e-9),
            **distributed,
        }
        params_info = {
            "kind": job.lora.kind,
            "rank": job.lora.rank,
            "alpha": job.lora.alpha,
            "dropout": job.lora.dropout,
            "targets": job.lora.targets,
            "lr": job.cfg.lr,
            "max_steps": job.cfg.max_steps,
            "batch_size": job.cfg.batch_size,
            "grad_accum": job.cfg.grad_accum,
            "strategy": job.cfg.strategy,
            "caption_dropout": job.cfg.caption_dropout,
            "optimizer": job.cfg.optimizer,
            "gradient_checkpointing": job.cfg.gradient_checkpointing,
            "seed": job.seed,
            "trainable_params": sum(p.numel() for p in params.values()),
            **{k: v for k, v in metadata.items() if k == "reference_downscale_factor"},
        }
        write_json(
            tmp / "train.json",
            {
                "run_name": f"{job.lineage['dataset']}-{job.fingerprint[:8]}",
                "lineage": job.lineage,
                "params": params_info,
                "final": final,
                "trigger": job.trigger,
                "files": hashes,
            },
        )
        summary = {
            "steps": job.cfg.max_steps,
            "final_loss": final["loss"],
            "val_loss": val_loss,
            "adapter_sha256": hashes["adapter.safetensors"],
        }
        record = save_record(tmp, "train", job.fingerprint, summary)
    return {**record, "skipped": False}


class _weights:
    """Temporarily load other values (the EMA copy) into the trainable parameters."""

    def __init__(self, params: dict[str, torch.nn.Parameter], values: dict[str, torch.Tensor]):
        self.params, self.values = params, values

    def __enter__(self) -> None:
        self.saved = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.values[n])

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.saved[n])


def _header(job: Job, batch: Batch) -> dict[str, str]:
    """The metadata the exported files carry (DESIGN.md: Formats and names); an IC-LoRA's
    reference scale goes only where a consumer reads it (trainer.export.CONSUMER_ONLY)."""
    conditioning = {}
    if job.cfg.strategy == "reference_video" and batch.reference is not None:
        factor = reference_downscale_factor(batch.reference, tuple(batch.video.shape[-2:]))
        conditioning["reference_downscale_factor"] = str(factor)
    return {
        **conditioning,
        "base_model": job.lineage["base_model"],
        "base_model_hash": job.lineage["base_model_hash"],
        "ltx_version": job.lineage["ltx_version"],
        "rank": str(job.lora.rank),
        "alpha": str(job.lora.alpha),
        "targets": job.lora.targets,
        "trigger": job.trigger,
        "dataset_hash": job.lineage["dataset_hash"],
        "config_hash": job.lineage["config_hash"],
        "git_commit": job.lineage["git_commit"],
        "run_id": job.fingerprint[:16],
    }
