"""What a training run needs around its loop: input checks, the optimiser, the trackers
(MLflow, W&B offline) and validation sample videos. Where the base goes is `trainer.placement`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ltx.config import ModelConfig
from stagekit.errors import ConfigError, UserError
from trainer.config import LoraConfig, TrainerConfig

SAMPLES_DIR = "samples"  # validation videos: <checkpoint run>/samples, then <train>/samples
EXPERIMENT = "ltx-lora-train"  # MLflow experiment of training runs (MLFLOW_EXPERIMENT_NAME wins)
PARENT_RUN_ENV = "LTX_LORA_PARENT_RUN_ID"  # a sweep's parent run: tagged mlflow.parentRunId


def check_cache(index: dict[str, Any], cache_dir: Path, model_path: Path, ltx_version: str) -> None:
    """Refuse a cache encoded for another LTX version or base model: its latents and text
    embeddings would silently train the wrong thing. A cache older than version records
    (format 2) is checked by its model hash alone."""
    from ltx.identity import model_hash

    identity = index.get("identity") or {}
    version = identity.get("ltx_version")
    if version is not None and version != ltx_version:
        raise UserError(
            f"the latent cache {cache_dir} was made for LTX-{version}, but this run asks for "
            f"LTX-{ltx_version} (model.ltx_version={ltx_version}): re-run `ltx-lora preprocess "
            f"model=...` with this run's model settings to re-encode it for LTX-{ltx_version}"
        )
    cached = identity.get("model")
    current = model_hash(model_path)
    if cached != current:
        made_for = f"model {cached[:12]}…" if cached else "an unknown model"
        raise UserError(
            f"the latent cache {cache_dir} was made for {made_for}, not for {model_path} "
            f"({current[:12]}…): re-run `ltx-lora preprocess` with this model"
        )


def cache_has_audio(cache_dir: Path, index: dict[str, Any]) -> bool:
    """Whether any cached sample holds audio latents (read from the shards' headers only)."""
    from safetensors import safe_open

    for entry in index.get("entries", {}).values():
        with safe_open(str(Path(cache_dir) / entry["file"]), framework="pt") as f:
            if "audio" in set(f.keys()):
                return True
    return False


def empty_prompt(cache_dir: Path, index: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The cached empty-prompt conditioning that caption dropout swaps in, padded as a batch's
    text is (`prompt_features` [1, T, D], `prompt_attention_mask` [1, T], ...)."""
    from trainer.cache import EMPTY_PROMPT, load_entry, text_inputs

    entry = index.get(EMPTY_PROMPT)
    if entry is None:
        raise UserError(
            f"trainer.caption_dropout needs the empty-prompt embedding, which the cache in "
            f"{cache_dir} lacks (made by an older version): re-run `ltx-lora preprocess`"
        )
    return text_inputs(load_entry(cache_dir, entry))


# strategies that need conditioning latents in the cache: (shard key, what, preprocess setting)
CONDITIONS = {
    "reference_video": ("reference", "reference latents", "preprocess.reference=edges"),
    "multi_reference": ("reference.0", "reference files", "preprocess.reference=files"),
    "keyframes": ("keyframe_last", "keyframe images", "preprocess.keyframes=first_last"),
}


def check_inputs(cfg: TrainerConfig, cache_dir: Path, index: dict[str, Any], device) -> None:
    """Settings that cannot work here fail before a checkpoint folder exists (which would
    otherwise block the next run as an unfinished one with other settings)."""
    if cfg.optimizer == "adamw8bit":
        _bitsandbytes(device)
    if cfg.distributed == "fsdp2" and cfg.validation_every:
        # the sampler runs on the main process only, which cannot run a sharded base alone
        raise ConfigError(
            "trainer.validation_every needs trainer.distributed=ddp: sample videos are not made "
            "from an FSDP2-sharded transformer yet (set trainer.validation_every=0)"
        )
    if cfg.strategy in CONDITIONS:
        from safetensors import safe_open

        key, what, setting = CONDITIONS[cfg.strategy]
        first = next((e for _, e in sorted(index["entries"].items())), None)
        if first is not None:
            with safe_open(str(Path(cache_dir) / first["file"]), framework="pt") as f:
                if key not in set(f.keys()):
                    raise UserError(
                        f"trainer.strategy={cfg.strategy} needs {what} in the cache: "
                        f"re-run `ltx-lora preprocess {setting}`"
                    )


def make_optimizer(
    params: list[torch.nn.Parameter], cfg: TrainerConfig, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW, or bitsandbytes' 8-bit AdamW (CUDA only): never a silent fallback."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    bnb = _bitsandbytes(device)
    return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _bitsandbytes(device: torch.device) -> Any:
    if device.type != "cuda":
        raise ConfigError(
            "trainer.optimizer=adamw8bit needs a CUDA GPU (bitsandbytes' 8-bit AdamW); "
            f"this run is on {device.type}: use trainer.optimizer=adamw"
        )
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ConfigError(
            "trainer.optimizer=adamw8bit needs bitsandbytes: pip install bitsandbytes "
            "(or use trainer.optimizer=adamw)"
        ) from None
    return bnb


@contextmanager
def own_sharding(cfg: TrainerConfig) -> Iterator[None]:
    """Keep Accelerate out of FSDP while the Accelerator is built: the trainer shards the base
    itself (`trainer.placement`) and averages the adapter's gradients itself, so an
    `accelerate launch` FSDP recipe must not make Accelerate wrap anything (its FSDP2 `prepare`
    also refuses an optimizer without its model). An FSDP recipe with `trainer.distributed=ddp`
    is refused, so a run never silently keeps a full base per GPU on a recipe meant to shard
    it."""
    key = "ACCELERATE_USE_FSDP"
    recipe = os.environ.get(key, "false").lower() == "true"
    if recipe and cfg.distributed != "fsdp2":
        raise ConfigError(
            "this `accelerate launch` recipe asks for FSDP, but trainer.distributed=ddp: add "
            "trainer.distributed=fsdp2 to shard the base, or launch with "
            "configs/accelerate/ddp.yaml"
        )
    if recipe:
        os.environ[key] = "false"
    try:
        yield
    finally:
        if recipe:
            os.environ[key] = "true"


def tracker_names(cfg: TrainerConfig) -> list[str]:
    """Accelerate trackers to log to. MLflow only where a tracking URI is set (`ltx-lora
    train` sets the workspace's store; a bare library call logs to metrics.jsonl only);
    W&B always offline, and only when installed."""
    names = []
    if "mlflow" in cfg.trackers and os.environ.get("MLFLOW_TRACKING_URI"):
        names.append("mlflow")
    if "wandb" in cfg.trackers:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError(
                "trainer.trackers includes wandb, which is not installed: "
                "pip install 'ltx-lora[wandb]' (wandb 0.31.0), or drop it from trainer.trackers"
            ) from None
        os.environ["WANDB_MODE"] = "offline"  # nothing leaves the machine
        names.append("wandb")
    return names


@contextmanager
def mark_failed(accelerator: Any) -> Iterator[None]:
    """A training run that raises (loss guard, Ctrl-C, a bug) ends as FAILED in MLflow and
    W&B instead of staying RUNNING forever."""
    try:
        yield
    except BaseException:
        for tracker in accelerator.trackers:
            if tracker.name == "mlflow":
                import mlflow

                mlflow.end_run(status="FAILED")
            elif tracker.name == "wandb":
                tracker.run.finish(exit_code=1)
        raise


def start_trackers(
    accelerator: Any,
    lineage: dict[str, str],
    fingerprint: str,
    lora_cfg: LoraConfig,
    cfg: TrainerConfig,
    seed: int,
) -> None:
    """One tracked run per training process group, named like train.json's run_name, with the
    parameters and, under a sweep, the parent run's id. No trackers: nothing to start, and
    Accelerate's `log` is then a no-op, so the loop never asks whether anything is tracked."""
    if not accelerator.log_with:
        return
    run_name = f"{lineage['dataset']}-{fingerprint[:8]}"
    tags = {"ltx_lora.fingerprint": fingerprint, "ltx_lora.dataset": lineage["dataset"]}
    if parent := os.environ.get(PARENT_RUN_ENV):
        tags["mlflow.parentRunId"] = parent
    params = {
        **{f"lora.{k}": v for k, v in lora_cfg.model_dump().items()},
        **{f"trainer.{k}": v for k, v in cfg.model_dump().items()},
        "seed": seed,
    }
    wandb_dir = Path(accelerator.project_dir) / "wandb"
    if "wandb" in [t.name for t in accelerator.log_with]:
        wandb_dir.mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers(
        os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT),
        config=params,
        init_kwargs={
            "mlflow": {
                "run_name": run_name,
                "tags": tags,
                "logging_dir": accelerator.logging_dir,  # a new experiment's artifacts
            },
            "wandb": {"name": run_name, "dir": str(wandb_dir), "tags": [lineage["dataset"]]},
        },
    )


class ValidationSampler:
    """Sample videos every `trainer.validation_every` steps through `ltx.sampling.generate`
    (the code evaluation uses), with the live adapter, for the first validation clip's caption
    at its bucket size, seed `seed`, audio muxed in: text-to-video, or conditioned as the mode
    is used (its first frame for image_to_video, first and last for keyframes)."""

    def __init__(
        self,
        cache_dir: Path,
        index: dict[str, Any],
        model_path: Path,
        model_cfg: ModelConfig,
        run: Path,
        cfg: TrainerConfig,
        seed: int,
    ) -> None:
        self.model_path, self.model_cfg, self.cfg, self.seed = model_path, model_cfg, cfg, seed
        self.dest = run / SAMPLES_DIR
        entries = sorted(index["entries"].items())
        held_out = [e for _, e in entries if e["split"] == "validation"]
        self.entry = (held_out or [e for _, e in entries])[0] if entries else None
        self.cache_dir = cache_dir
        self.pipe = None

    def _reference(self, strategy: str) -> tuple | None:
        """The held-out clip's reference video (reference_video) or reference sheet
        (multi_reference: a list, in order), decoded from its cached latents, and the
        downscale factor, for an IC-LoRA render; else None."""
        from ltx.encode import decode_frames
        from trainer.cache import load_entry, reference_keys
        from trainer.strategies import reference_downscale_factor

        if strategy not in ("reference_video", "multi_reference"):
            return None
        tensors = load_entry(self.cache_dir, self.entry)
        keys = ["reference"] if strategy == "reference_video" else reference_keys(tensors)
        target = tuple(tensors["video"].shape[-2:])
        factor = reference_downscale_factor(tensors[keys[0]][None], target)
        videos = [decode_frames(self.pipe.vae, tensors[k]) for k in keys]
        return (videos[0] if strategy == "reference_video" else videos), factor

    def _conditions(self, strategy: str) -> list | None:
        """What the mode conditions on, from the held-out clip, as its inference pipeline
        takes it: its first frame (image_to_video), its first and last (keyframes) as images,
        decoded from their cached latents. None: text-to-video."""
        from ltx.encode import decode_image
        from trainer.cache import KEYFRAME_FIRST, KEYFRAME_LAST, load_entry

        if strategy not in ("image_to_video", "keyframes"):
            return None
        tensors = load_entry(self.cache_dir, self.entry)
        first = tensors.get(KEYFRAME_FIRST, tensors["video"][:, :1])
        images = [(decode_image(self.pipe.vae, first), 0)]
        if strategy == "keyframes":
            images.append((decode_image(self.pipe.vae, tensors[KEYFRAME_LAST]), -1))
        return images

    def run(self, step: int, strategy: Any, denoiser: dict, scheduler: Any) -> dict[str, float]:
        """Write `step-NNNNNN.mp4`; return the metrics to log. The global RNG is restored so a
        run with samples trains exactly as one without."""
        from ltx.loading import load_pipeline
        from ltx.sampling import generate, write_clip

        if self.entry is None:
            return {}
        if self.pipe is None:
            # the dev sampler: the transformer rendered here is the one being trained (dev)
            self.pipe = load_pipeline(self.model_path, self.model_cfg.dtype)
        transformer = denoiser["transformer"]
        self.pipe.transformer, self.pipe.connectors = transformer, denoiser["connectors"]
        width, height, frames = self.entry["bucket"]
        rng = torch.get_rng_state()
        transformer.eval()
        try:
            (clip,) = generate(
                self.pipe,
                [self.entry["caption"]],
                [self.seed],
                width=width,
                height=height,
                frames=frames,
                fps=float(self.entry["fps"]),
                steps=self.cfg.validation_steps,
                guidance_scale=1.0,
                conditions=self._conditions(strategy.name),
                reference=self._reference(strategy.name),
            )
        finally:
            transformer.train()
            torch.set_rng_state(rng)
        self.dest.mkdir(parents=True, exist_ok=True)
        write_clip(self.dest / f"step-{step:06d}.mp4", clip)
        return {"sample_videos": float(len(list(self.dest.glob("*.mp4"))))}
