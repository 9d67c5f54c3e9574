"""Control videos for IC-LoRA training at the size the reference is cached at (the edges
themselves come from `ltx.controls`, which the evaluation derives its controls from too)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from stagekit.errors import UserError


def downscaled(frames: np.ndarray, factor: int, vae: Any) -> np.ndarray:
    """uint8 [F, H, W, 3] frames at 1/`factor` of their height and width (area averaging), as
    an IC-LoRA pipeline shrinks a full-size reference for `reference_downscale_factor`."""
    if factor == 1:
        return frames
    _, height, width, _ = frames.shape
    step = factor * vae.spatial_compression_ratio
    if height % step or width % step:
        raise UserError(
            f"preprocess.reference_downscale={factor}: a {width}x{height} clip's reference "
            f"would not be a multiple of the VAE's {vae.spatial_compression_ratio} pixels; use "
            f"buckets whose sides are multiples of {step}, or a smaller factor"
        )
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    small = torch.nn.functional.avg_pool2d(pixels, factor)
    return small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
