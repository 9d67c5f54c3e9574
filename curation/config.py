"""Typed curation config: validated once at the stage's entry, unknown keys rejected."""

from __future__ import annotations

import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Placeholders a caption template may use, all taken from the dataset card.
TEMPLATE_FIELDS = ("trigger", "class_noun", "client", "adapter")


class VlmConfig(BaseModel):
    """A local vision-language model (Qwen-VL class) that captions clips without a sidecar."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None  # a local folder (save_pretrained layout); never a hub id
    prompt: str = "Describe this video clip in one sentence."
    batch_size: int = Field(default=4, gt=0)
    max_new_tokens: int = Field(default=48, gt=0)
    frames: int = Field(default=1, ge=1, le=8)  # frames per clip shown to the model
    image_size: int = Field(default=448, ge=28)  # longest side of each frame shown


class CaptionConfig(BaseModel):
    """Where captions come from (first that answers wins) and the checks run on them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str = "{trigger} {class_noun}"
    require_trigger: bool = True
    # Reviewed (imported sheet) captions always win; then these, in order.
    backends: list[Literal["sidecar", "vlm", "template"]] = ["sidecar", "template"]
    vlm: VlmConfig = Field(default_factory=VlmConfig)
    min_words: int = Field(default=2, ge=0)
    max_words: int = Field(default=120, gt=0)
    fail_on_check: bool = False  # true: a failed caption check stops the stage

    @field_validator("template")
    @classmethod
    def _known_placeholders(cls, v: str) -> str:
        names = {name for _, name, _, _ in string.Formatter().parse(v) if name is not None}
        unknown = names - set(TEMPLATE_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{sorted(unknown)[0]}}}: use {', '.join(TEMPLATE_FIELDS)}"
            )
        return v

    @model_validator(mode="after")
    def _vlm_needs_a_path(self) -> CaptionConfig:
        if "vlm" in self.backends and not self.vlm.path:
            raise ValueError("backends lists 'vlm' but vlm.path is empty: set the model's folder")
        return self


class SceneConfig(BaseModel):
    """Scene cuts and how scenes become training-length segments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detect: bool = True
    # A cut is a jump in the colour histogram (L1/2 distance, 0..1) between consecutive frames:
    # histograms ignore motion and texture shifts that fool pixel differences.
    cut_threshold: float = Field(default=0.45, gt=0, le=1)
    min_scene_s: float = Field(default=0.0, ge=0)  # shorter scenes yield no clip
    max_scene_s: float | None = Field(default=None, gt=0)  # only the first part of a longer one
    max_clips_per_scene: int | None = Field(default=None, gt=0)


class FilterConfig(BaseModel):
    """Thresholds of the per-segment and per-file filters (each drop has a reason code)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    black_luma: float = Field(default=12.0, ge=0)  # mean luma (0-255) under which a frame is black
    black_fraction: float = Field(default=0.8, gt=0, le=1)  # of a segment's frames
    frozen_motion: float = Field(default=0.3, ge=0)  # mean abs change per frame, 0-255 levels
    blur_sharpness: float = Field(default=25.0, ge=0)  # variance of the Laplacian, median frame
    max_upscale: float = Field(default=1.0, ge=1)  # a smaller source is `too_small`
    letterbox: bool = True
    letterbox_luma: float = Field(default=24.0, ge=0)  # bars are darker than this everywhere
    dedupe: bool = True
    dedupe_distance: int = Field(default=6, ge=0, le=64)  # dHash bits that may differ
    leakage: bool = True  # drop clips near a reference/held-out clip


class CurationConfig(BaseModel):
    """Buckets, clip length and encoding of curated clips, the filters and the split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Either explicit (width, height) buckets, or a pixel budget that derives one bucket per
    # aspect ratio from the model's bucket rules.
    buckets: list[tuple[int, int]] | None = None
    pixel_budget: int | None = Field(default=None, gt=0)
    aspect_ratios: list[float] = Field(default=[16 / 9, 4 / 3, 1.0, 3 / 4, 9 / 16], min_length=1)
    frames: int = Field(gt=0)
    fps: float = Field(gt=0)
    stills: bool = True  # jpg/png/webp become 1-frame clips
    validation_fraction: float = Field(ge=0, lt=1)
    split_seed: int = 0
    gop: int = Field(gt=0)  # keyframe interval: short, so random access in training is cheap
    crf: int = Field(ge=0, le=51)
    preset: str = "veryfast"  # libx264 speed/size trade-off (quality is set by crf)
    # The LTX-2 audio VAE computes its mel spectrogram at 16 kHz from 2 channels
    # (diffusers AutoencoderKLLTX2Audio: sample_rate=16000, in_channels=2).
    audio_sample_rate: int = Field(default=16000, gt=0)
    audio_channels: int = Field(default=2, ge=1, le=2)
    workers: int = Field(default=0, ge=0)  # processes for datasets.map; 0: one per core
    scenes: SceneConfig = Field(default_factory=SceneConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    caption: CaptionConfig = Field(default_factory=CaptionConfig)

    @model_validator(mode="after")
    def _one_bucket_source(self) -> CurationConfig:
        if (self.buckets is None) == (self.pixel_budget is None):
            raise ValueError("set exactly one of buckets (a list) or pixel_budget (w*h)")
        if self.buckets is not None and not self.buckets:
            raise ValueError("buckets is empty: list at least one [width, height]")
        return self

    def media_fields(self) -> dict[str, Any]:
        """The settings a curated clip's pixels and samples depend on (its name hashes these)."""
        return self.model_dump(
            include={"frames", "fps", "gop", "crf", "preset", "audio_sample_rate", "audio_channels"}
        )

    def segment_fields(self) -> dict[str, Any]:
        """Everything that decides which segments a source yields and what they hold."""
        return self.model_dump(exclude={"caption", "validation_fraction", "split_seed", "workers"})
