"""Measure what a generated demo clip shows: the shape's colour and its direction of motion.

The prior's clips are one flat shape over a smooth vertical gradient, so the background of a
row is that row's median colour; pixels far from it are the shape. Its mean colour names the
nearest palette colour, and its centroid's travel from the first frames to the last names
the motion. Used by the tests (prior accuracy) and the docs' figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from demo import data as demo_data

FOREGROUND_DISTANCE = 60.0  # RGB distance from the row's background that counts as shape
MIN_PIXELS = 8  # fewer shape pixels than this per frame: nothing was drawn


@dataclass(frozen=True)
class Reading:
    """What one clip shows: colour and motion names (None when no shape is found)."""

    colour: str | None
    motion: str | None
    shape_fraction: float  # share of pixels that are shape (the prior draws ~5 %)


def foreground(video: np.ndarray) -> np.ndarray:
    """bool [F, H, W]: pixels far from their row's median (the background) colour."""
    frames = video.astype(np.float32)
    background = np.median(frames, axis=2, keepdims=True)  # [F, H, 1, 3]
    return np.linalg.norm(frames - background, axis=-1) > FOREGROUND_DISTANCE


def nearest_colour(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    dist = [np.linalg.norm(rgb - np.array(palette[n], np.float32)) for n in names]
    return names[int(np.argmin(dist))]


def read_clip(video: np.ndarray, palette: dict[str, tuple[int, int, int]] | None = None) -> Reading:
    """The shape's colour (nearest of `palette`, default the prior's) and motion in `video`
    uint8 [F, H, W, 3]."""
    mask = foreground(video)
    frames = mask.shape[0]
    if mask.sum() < MIN_PIXELS * frames:
        return Reading(None, None, float(mask.mean()))
    colour = nearest_colour(
        video[mask].astype(np.float32).mean(axis=0), palette or demo_data.COLOURS
    )
    return Reading(colour, _motion(mask), float(mask.mean()))


def _motion(mask: np.ndarray) -> str | None:
    quarter = max(1, mask.shape[0] // 4)
    start, end = _centroid(mask[:quarter]), _centroid(mask[-quarter:])
    if start is None or end is None:
        return None
    dx, dy = end - start
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def _centroid(mask: np.ndarray) -> np.ndarray | None:
    counts = mask.sum(axis=0)  # [H, W]: how often each pixel is shape in these frames
    ys, xs = np.nonzero(counts)
    if len(xs) == 0:
        return None
    weights = counts[ys, xs].astype(np.float64)
    return np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])


def colour_share(video: np.ndarray, rgb: tuple[int, int, int], tolerance: float = 60.0) -> float:
    """Share of pixels within `tolerance` (RGB distance) of `rgb`: how much of a colour a clip
    shows, e.g. a mascot's body colour the base model never draws."""
    dist = np.linalg.norm(video.astype(np.float32) - np.array(rgb, np.float32), axis=-1)
    return float((dist < tolerance).mean())
