"""Controls an IC-LoRA is conditioned on when a dataset has none of its own: derived from the
clip itself, by the trainer's preprocess (`preprocess.reference=edges`) and by the evaluation
alike, so an adapter meets at evaluation the control it was trained on; and the downscale a
reference gets before it is encoded (`downscaled`), the same for both."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from stagekit.errors import UserError


def edge_frames(frames: np.ndarray) -> np.ndarray:
    """The Sobel gradient magnitude of each frame's luma, scaled to 0..255 per clip, as grey RGB
    uint8 [F, H, W, 3] of the clip's size."""
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    padded = np.pad(luma, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (
        padded[:, :-2, 2:] + 2 * padded[:, 1:-1, 2:] + padded[:, 2:, 2:]
        - padded[:, :-2, :-2] - 2 * padded[:, 1:-1, :-2] - padded[:, 2:, :-2]
    )  # fmt: skip
    gy = (
        padded[:, 2:, :-2] + 2 * padded[:, 2:, 1:-1] + padded[:, 2:, 2:]
        - padded[:, :-2, :-2] - 2 * padded[:, :-2, 1:-1] - padded[:, :-2, 2:]
    )  # fmt: skip
    magnitude = np.hypot(gx, gy)
    scaled = magnitude * (255.0 / max(float(magnitude.max()), 1e-6))
    return np.repeat(scaled.round().astype(np.uint8)[..., None], 3, axis=-1)


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
