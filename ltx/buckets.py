"""Bucket rules: which clip shapes the model's VAE accepts, derived from its config."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BucketRules:
    """A clip of `frames` x `height` x `width` encodes exactly when frames = temporal*k + 1 and
    both sides are multiples of `spatial` (LTX-2.0: temporal 8, spatial 32)."""

    spatial: int
    temporal: int

    def frames_ok(self, frames: int) -> bool:
        return frames >= 1 and (frames - 1) % self.temporal == 0

    def side_ok(self, side: int) -> bool:
        return side > 0 and side % self.spatial == 0

    def floor_frames(self, frames: int) -> int:
        """The longest valid frame count that fits in `frames` (0 when none does)."""
        return 0 if frames < 1 else (frames - 1) // self.temporal * self.temporal + 1

    def check(self, width: int, height: int, frames: int) -> None:
        """Raise ValueError naming the rule a bucket breaks."""
        if not (self.side_ok(width) and self.side_ok(height)):
            raise ValueError(f"bucket {width}x{height}: sides must be multiples of {self.spatial}")
        if not self.frames_ok(frames):
            raise ValueError(f"bucket frames {frames}: must be {self.temporal}k+1")


# LTX2Pipeline.check_inputs rejects any width or height that is not a multiple of 32, whatever
# the VAE's own ratio, so a bucket must satisfy both.
PIPELINE_SIDE_MULTIPLE = 32
_SPATIAL_DOWN = {"spatial", "spatiotemporal", "conv"}
_TEMPORAL_DOWN = {"temporal", "spatiotemporal", "conv"}
_DEFAULT_DOWNSAMPLE = ("spatial", "temporal", "spatiotemporal", "spatiotemporal")


def bucket_rules(model_path: Path) -> BucketRules:
    """Bucket rules of a local diffusers model folder, from its `vae/config.json`."""
    cfg_path = Path(model_path) / "vae" / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no video VAE config at {cfg_path}: is {model_path} a model?")
    return bucket_rules_from_vae_config(json.loads(cfg_path.read_text()))


def bucket_rules_from_vae_config(cfg: dict[str, Any]) -> BucketRules:
    """Rules from an `AutoencoderKLLTX2Video` config: its compression ratio keys when present,
    else patch sizes x the 2x down-sampling of each scaling encoder block."""
    spatial, temporal = _vae_ratios(cfg)
    return BucketRules(spatial=math.lcm(spatial, PIPELINE_SIDE_MULTIPLE), temporal=temporal)


def _vae_ratios(cfg: dict[str, Any]) -> tuple[int, int]:
    spatial = cfg.get("spatial_compression_ratio")
    temporal = cfg.get("temporal_compression_ratio")
    if spatial and temporal:
        return int(spatial), int(temporal)
    types = tuple(cfg.get("downsample_type") or _DEFAULT_DOWNSAMPLE)
    scaling = cfg.get("spatio_temporal_scaling", (True,) * len(types))
    if isinstance(scaling, bool):
        scaling = (scaling,) * len(types)
    down = [t for t, on in zip(types, scaling, strict=False) if on]
    derived_s = int(cfg.get("patch_size", 4)) * 2 ** sum(t in _SPATIAL_DOWN for t in down)
    derived_t = int(cfg.get("patch_size_t", 1)) * 2 ** sum(t in _TEMPORAL_DOWN for t in down)
    return int(spatial or derived_s), int(temporal or derived_t)
