"""Scores of generated clips against reference clips (numpy only, deterministic)."""

from __future__ import annotations

import numpy as np

BINS = 8  # per channel: 512 colour cells, coarse enough to ignore compression noise


def colour_histogram(frames: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Normalised joint RGB histogram of every pixel of `frames` [F, H, W, 3] uint8 → [bins³]."""
    cells = (frames.reshape(-1, 3).astype(np.int64) * bins) // 256
    index = (cells[:, 0] * bins + cells[:, 1]) * bins + cells[:, 2]
    hist = np.bincount(index, minlength=bins**3).astype(np.float64)
    return hist / hist.sum()


def histogram_intersection(a: np.ndarray, b: np.ndarray) -> float:
    """Shared mass of two normalised histograms: 1 for the same colours, 0 for disjoint ones."""
    return float(np.minimum(a, b).sum())


def reference_similarity(video: np.ndarray, reference_hist: np.ndarray) -> float:
    """How much of a clip's colour distribution the reference material shares, in [0, 1]."""
    return histogram_intersection(colour_histogram(video), reference_hist)


def pooled_histogram(clips: list[np.ndarray]) -> np.ndarray:
    """One histogram over all frames of all clips, each clip weighted equally."""
    return np.mean([colour_histogram(c) for c in clips], axis=0)
