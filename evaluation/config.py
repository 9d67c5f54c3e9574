"""Typed config of the `evaluation` group."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EvaluationConfig(BaseModel):
    """Prompt templates, seeds and render settings shared by the base and adapter renders."""

    model_config = ConfigDict(extra="forbid")

    prompts: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    width: int = Field(64, gt=0)
    height: int = Field(64, gt=0)
    frames: int = Field(17, gt=0)
    fps: float = Field(24.0, gt=0)
    steps: int = Field(4, gt=0)
    guidance_scale: float = Field(1.0, ge=0)
    min_improvement: float = 0.0
