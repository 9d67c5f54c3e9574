"""Typed config of the `model` group (configs/model/*.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class ModelConfig(BaseModel):
    """Which LTX-2 base model to use and how to load it. Never downloads: `path` is local."""

    model_config = ConfigDict(extra="forbid")

    name: str
    source: Literal["tiny", "demo", "diffusers"]
    ltx_version: str = "2.0"
    path: str | None = None  # diffusers folder (source=diffusers)
    seed: int = 0  # weights seed (source=tiny)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
