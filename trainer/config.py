"""Typed config of the `lora`, `trainer` and `preprocess` groups."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class LoraConfig(BaseModel):
    """The adapter: rank, scale and which transformer modules it wraps."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["lora", "dora", "lokr"] = "lora"  # PEFT LoraConfig / use_dora / LoKrConfig
    rank: int = Field(8, gt=0)
    alpha: float = Field(8.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: str = "video_attention"


class TrainerConfig(BaseModel):
    """Optimisation and flow-matching settings of `ltx-lora train`."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(60, gt=0)
    batch_size: int = Field(1, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(5, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    sigma_mean: float = 0.0
    sigma_std: float = Field(1.0, gt=0)
    uniform_fraction: float = Field(0.1, ge=0, le=1)
    log_every: int = Field(5, gt=0)
    strategy: Literal[
        "audio_video",
        "text_to_video",
        "text_to_audio",
        "image_to_video",
        "reference_video",
        "multi_reference",
        "keyframes",
    ] = "audio_video"
    # keyframes: this many interior keyframes per step, at distinct random latent indices
    # (needs preprocess.keyframes=first_last_interior); 0 = first and last only
    keyframe_interior: int = Field(0, ge=0)
    grad_accum: int = Field(1, gt=0)
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    ema_decay: float = Field(0.0, ge=0, lt=1)  # 0: no EMA copy of the adapter
    checkpoint_every: int = Field(20, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    resume: bool = True  # false: discard unfinished checkpoints and start over
    loss_spike_factor: float = Field(20.0, gt=1)  # stop when loss > factor x recent median
    caption_dropout: float = Field(0.0, ge=0, le=1)  # share of clips trained on the empty prompt
    gradient_checkpointing: bool = False  # recompute block activations in backward
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"  # adamw8bit: bitsandbytes, CUDA only
    validation_every: int = Field(0, ge=0)  # steps between sample videos; 0 = off
    validation_steps: int = Field(4, gt=0)  # denoising steps of each sample video
    trackers: list[Literal["mlflow", "wandb"]] = ["mlflow"]  # [] = metrics.jsonl only
    # several processes: ddp = a full base per process; fsdp2 = torch FSDP2 shards the frozen
    # base over the processes, one unit per transformer block (the adapter stays replicated)
    distributed: Literal["ddp", "fsdp2"] = "ddp"
    # the last N transformer blocks' frozen Linear weights stay in host memory and stream to
    # the GPU just before each block runs (trainer/swap.py); 0 = off, auto = the memory plan's
    blocks_to_swap: Annotated[int, Field(ge=0)] | Literal["auto"] = 0

    @field_validator("blocks_to_swap")
    @classmethod
    def _swap_needs_checkpointing(cls, value: int | str, info: ValidationInfo) -> int | str:
        if value and not info.data.get("gradient_checkpointing"):
            raise ValueError(
                "block swap needs trainer.gradient_checkpointing=true (each swapped block is "
                "streamed in again for its recomputation in backward)"
            )
        if value and info.data.get("distributed") == "fsdp2":
            raise ValueError(
                "block swap and trainer.distributed=fsdp2 both place the base: choose one"
            )
        return value


class PreprocessConfig(BaseModel):
    """What `ltx-lora preprocess` encodes into the latent cache."""

    model_config = ConfigDict(extra="forbid")

    with_audio: bool = True
    vae_tiling: bool = False  # decode/encode large clips in tiles (real GPUs)
    frame_reader: Literal["auto", "decord", "pyav"] = "auto"
    text_chunk: int = Field(256, gt=0)  # captions encoded per text-encoder load
    # reference latents for the IC-LoRA strategies: none; `edges` (reference_video: a Sobel
    # edge map of each clip, same size, encoded by the VAE: a control derived from the clip);
    # `files` (multi_reference: the clip's curated `_ref<i>` files, each encoded on its own)
    reference: Literal["none", "edges", "files"] = "none"
    # references at 1/N of the clip's height and width (IC-LoRA `reference_downscale_factor`:
    # cheaper training and inference; written into the exports the consumers read it from)
    reference_downscale: int = Field(1, ge=1, le=4)
    # the Gemma text encoder quantised while it loads onto the device (trainer.text_encoder):
    # 12B in bf16 is 22.7 GiB, int8 12.3 GiB, nf4 7.3 GiB. Changes the cached text features
    text_encoder_quantize: Literal["none", "int8", "nf4"] = "none"
    # keyframe latents for trainer.strategy=keyframes: none, or `first_last` (the clip's first
    # and last frames, each re-compressed and encoded on its own as the condition pipeline
    # prepares a keyframe image); `first_last_interior` adds the frame at every interior latent
    # index, for trainer.keyframe_interior's random interior keyframes
    keyframes: Literal["none", "first_last", "first_last_interior"] = "none"
