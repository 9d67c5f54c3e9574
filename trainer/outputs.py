"""What a finished run writes: the adapters for every consumer (final and EMA), verified
through the pipeline, its logs, `train.json` and the stage record, all in one atomic folder."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from ltx.config import ModelConfig
from ltx.loading import load_pipeline
from stagekit.files import atomic_dir, write_json, write_jsonl, write_text
from stagekit.stage import save_record
from trainer.config import LoraConfig, TrainerConfig
from trainer.data import Batch
from trainer.export import export_adapter, verify_export
from trainer.runtime import SAMPLES_DIR
from trainer.strategies import reference_downscale_factor


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


def export_run(
    job: Job,
    model: torch.nn.Module,
    params: dict[str, torch.nn.Parameter],
    ema: dict[str, torch.Tensor] | None,
    progress: Any,  # trainer.loop.Progress
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
            **{k: v for k, v in metadata.items() if k.startswith("reference_")},
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
    first = batch.reference if batch.reference is not None else (batch.references or (None,))[0]
    if job.cfg.strategy in ("reference_video", "multi_reference") and first is not None:
        factor = reference_downscale_factor(first, tuple(batch.video.shape[-2:]))
        conditioning["reference_downscale_factor"] = str(factor)
        # references keep the clip's frame rate (no temporal subsampling is trained)
        conditioning["reference_temporal_scale_factor"] = "1"
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
