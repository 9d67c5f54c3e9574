"""Controls an IC-LoRA is conditioned on when a dataset has none of its own: derived from the
clip itself, by the trainer's preprocess (`preprocess.reference=edges`) and by the evaluation
alike, so an adapter meets at evaluation the control it was trained on."""

from __future__ import annotations

import numpy as np


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
