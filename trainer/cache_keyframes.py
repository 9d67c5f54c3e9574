"""Keyframe images in a cache shard (`preprocess.keyframes`, trainer.strategy=keyframes): each
frame H.264 re-compressed at the version's image CRF and encoded on its own, as the condition
pipeline prepares a keyframe image (`ltx.keyframes.keyframe_latent`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ltx.keyframes import keyframe_latent
from stagekit.errors import UserError

# [C, 1, H, W]: the clip's first / last frame
KEYFRAME_FIRST, KEYFRAME_LAST = "keyframe_first", "keyframe_last"
# [C, F'-2, H, W]: the frame at each interior latent index (first_last_interior)
KEYFRAME_INTERIOR = "keyframe_interior"


def interior_keyframes(vae: Any, frames: np.ndarray, ltx_version: str) -> torch.Tensor:
    """[C, F'-2, H', W']: for each interior latent index k = 1..F'-2, the pixel frame
    (k - 1) * temporal + 1, where LTX2ConditionPipeline places an image given at latent index
    k (ltx.keyframes.keyframe_coords), as a keyframe image encoded on its own."""
    t = vae.temporal_compression_ratio
    latent_frames = (len(frames) - 1) // t + 1
    if latent_frames < 3:
        raise UserError(
            f"preprocess.keyframes=first_last_interior: a {len(frames)}-frame clip has no "
            "interior latent frame; use longer clips or preprocess.keyframes=first_last"
        )
    picks = [frames[(k - 1) * t + 1] for k in range(1, latent_frames - 1)]
    return torch.cat([keyframe_latent(vae, f, ltx_version) for f in picks], dim=1)
