"""`ltx-lora train`: a PEFT LoRA on the LTX-2 transformer, trained on cached latents.

`train` puts the named parts together: the run's identity (a fingerprint of everything that
decides the result: a finished run is skipped, an unfinished one resumed), the memory plan, the
placement of the base (trainer.placement), the loop (trainer.loop) and the outputs
(trainer.outputs). Checkpoints hold everything that decides the next step, so a killed run
resumes to the same losses and the same final weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

from ltx.config import ModelConfig
from ltx.loading import load_components
from stagekit.files import read_json
from stagekit.hashing import sha256_json
from stagekit.stage import load_record
from trainer import checkpoint
from trainer.cache import EMPTY_PROMPT, INDEX
from trainer.config import LoraConfig, TrainerConfig
from trainer.data import BatchOrder, collate, load_split
from trainer.loop import Session, lr_factor, run_steps, validation_loss
from trainer.oom import stop_on_oom
from trainer.outputs import Job, export_run
from trainer.placement import Placement, check_placement, place, place_connectors
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
from trainer.strategies import get_strategy, trained_modality

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
    settings = _settings(index, model_cfg, lora_cfg, cfg, seed, trigger, lineage)
    fingerprint = sha256_json(settings)
    if (record := load_record(out_dir, fingerprint)) is not None:
        return {**record, "skipped": True}
    # before anything loads: refuse a run that will not fit the GPU; resolve blocks_to_swap=auto
    cfg = plan_training(cache_dir, index, model_path, model_cfg, lora_cfg, cfg, plan_cache)
    accelerator = _accelerator(cfg, out_dir)
    check_inputs(cfg, cache_dir, index, accelerator.device)
    check_placement(model_cfg, lora_cfg, cfg, accelerator.device)
    root = checkpoint_root or out_dir.parent / "checkpoints"
    run = _prepare_run(accelerator, root, fingerprint, settings, cfg.resume)
    job = Job(
        cache_dir, out_dir, model_path, model_cfg, lora_cfg, cfg, seed, trigger, lineage,
        resolved_config, fingerprint,
    )  # fmt: skip
    placed, session = _session(job, index, accelerator, run, empty_text)
    session.resume()
    start_trackers(accelerator, lineage, fingerprint, lora_cfg, cfg, seed)
    planned = (cache_dir, index, model_path, model_cfg, lora_cfg, cfg, plan_cache)
    # a run that raises ends FAILED in the trackers; an out-of-memory names the knob to turn
    with mark_failed(accelerator), stop_on_oom(session.progress, run, placed.transformer, planned):
        order = BatchOrder(
            load_split(cache_dir, "train"),
            cfg.batch_size,
            seed,
            accelerator.process_index,
            accelerator.num_processes,
        )
        run_steps(session, order.stream(session.progress.epoch, session.progress.index))
        return _finish(job, session, placed, order)


def _settings(
    index: dict[str, Any],
    model_cfg: ModelConfig,
    lora_cfg: LoraConfig,
    cfg: TrainerConfig,
    seed: int,
    trigger: str,
    lineage: dict[str, str],
) -> dict[str, Any]:
    """Everything that decides the trained adapter: its fingerprint is the run's identity."""
    settings = {
        "cache": sha256_json({k: e["sha256"] for k, e in index["entries"].items()}),
        "model": lineage["base_model_hash"],
        "lora": lora_cfg.model_dump(),
        "trainer": cfg.model_dump(exclude=NOT_IN_FINGERPRINT),
        "seed": seed,
        "trigger": trigger,
    }
    if cfg.caption_dropout > 0:  # what caption dropout swaps in is an input too
        settings["empty_prompt"] = index[EMPTY_PROMPT]["sha256"]
    if model_cfg.quantize != "none":  # the base the adapter learns against
        settings["quantize"] = model_cfg.quantize
    return settings


def _accelerator(cfg: TrainerConfig, out_dir: Path) -> Accelerator:
    with own_sharding(cfg):  # the trainer shards (fsdp2), never Accelerate
        return Accelerator(
            cpu=not torch.cuda.is_available(),
            mixed_precision=cfg.mixed_precision,
            log_with=tracker_names(cfg) or None,
            # MLflow: the artifact location of a new experiment; W&B: its offline run folder
            project_config=ProjectConfiguration(
                project_dir=str(out_dir.parent / "tracking"),
                logging_dir=str(out_dir.parent / "tracking"),
            ),
        )


def _session(
    job: Job,
    index: dict[str, Any],
    accelerator: Accelerator,
    run: Path,
    empty_text: dict[str, torch.Tensor] | None,
) -> tuple[Placement, Session]:
    """The base placed with the adapter on it, the optimiser, schedule, EMA and noise: what
    the loop works with."""
    cfg, device = job.cfg, accelerator.device
    torch.manual_seed(job.seed)  # the adapter's initial values
    # a run that trains no audio puts no adapter on audio modules (they would learn nothing)
    modality = trained_modality(cfg.strategy, cache_has_audio(job.cache_dir, index))
    processes = accelerator.num_processes
    placed = place(job.model_path, job.model_cfg, job.lora, cfg, device, processes, modality)
    comps = load_components(job.model_path, ["connectors", "scheduler"], job.model_cfg.dtype)
    denoiser = {
        "transformer": placed.transformer,
        "connectors": place_connectors(comps["connectors"], device),
    }
    optimizer = make_optimizer(list(placed.params.values()), cfg, device)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
    optimizer = accelerator.prepare(optimizer)
    params = placed.params
    ema = {n: p.detach().clone() for n, p in params.items()} if cfg.ema_decay else None
    sampler = ValidationSampler(
        job.cache_dir, index, job.model_path, job.model_cfg, run, cfg, job.seed
    )
    session = Session(
        accelerator, cfg, job.seed, get_strategy(cfg.strategy), denoiser, comps["scheduler"],
        params, optimizer, lr_schedule, torch.Generator().manual_seed(job.seed), ema, run,
        empty_text, sampler,
    )  # fmt: skip
    return placed, session


def _finish(job: Job, s: Session, placed: Placement, order: BatchOrder) -> dict[str, Any]:
    """Every process checks it holds the same adapter; the main one then validates and exports
    a whole copy of the transformer, and marks the run complete."""
    accelerator = s.accelerator
    rank_diff = _ranks_agree(s.params, accelerator)
    layout = placed.layout()
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return {"rank": accelerator.process_index, "skipped": False}
    transformer, params = placed.whole()
    denoiser = {**s.denoiser, "transformer": transformer}
    held_out = load_split(job.cache_dir, "validation")
    val_loss = validation_loss(s.strategy, denoiser, s.scheduler, held_out, job.cfg, job.seed)
    if val_loss is not None:
        accelerator.log({"val_loss": val_loss}, step=s.progress.step)
    distributed = {
        "processes": accelerator.num_processes,
        "rank_weight_max_diff": rank_diff,
        **({"distributed": job.cfg.distributed, **layout} if placed.sharded else {}),
    }
    probe_batch = s.strategy.prepare(collate([order.samples[0]]))
    summary = export_run(
        job, transformer, params, s.ema, s.progress, val_loss, probe_batch, distributed,
        s.run / SAMPLES_DIR,
    )  # fmt: skip
    for tracker in accelerator.trackers:  # not end_training(): it destroys the process group
        tracker.finish()
    checkpoint.mark_complete(s.run)
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
