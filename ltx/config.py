"""Typed config of the `model` group (configs/model/*.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

from ltx import bases

BUILT_IN = ("tiny", "diffusers", "official")


class ModelConfig(BaseModel):
    """Which LTX-2 base model to use and how to load it. Never downloads: paths are local."""

    model_config = ConfigDict(extra="forbid")

    name: str
    # tiny: a random model built here; diffusers: a diffusers folder; official: Lightricks' own
    # files (the 2.0/2.3 single checkpoint, or 2.5's folder of per-component files); or an
    # installed packaged base by name (`ltx.bases`: demo)
    source: str
    ltx_version: Literal["2.0", "2.3", "2.5"] = "2.0"  # ltx.versions.SUPPORTED
    path: str | None = None  # the diffusers folder, official checkpoint or 2.5 folder
    text_encoder_path: str | None = None  # Gemma 3 folder beside a 2.0/2.3 checkpoint
    config_dir: str | None = None  # component configs (<name>/config.json) for other sizes
    # a distilled transformer (official file) that renders use; training stays on `path`'s dev
    # weights (source=official)
    inference_path: str | None = None
    seed: int = 0  # weights seed (source=tiny)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # weight-only quantisation of the frozen transformer's block Linear layers for training
    # (trainer/quantize.py): int8 and fp8 (e4m3) through optimum-quanto, nf4 through
    # bitsandbytes; the adapter trains on top as on a float base. "none": the base stays in `dtype`
    quantize: Literal["none", "int8", "fp8", "nf4"] = "none"

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        known = sorted({*BUILT_IN, *bases.names()})
        if source not in known:
            raise ValueError(f"'{source}' is not a model source; one of: {', '.join(known)}")
        return source
