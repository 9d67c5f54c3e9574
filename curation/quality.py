"""Per-frame pixel statistics (numpy only): luma, motion, sharpness, colour histograms, dHash."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from curation.config import CurationConfig

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
THUMB = 32  # side of the grey thumbnail motion is measured on: small enough to ignore noise


@dataclass(frozen=True)
class FrameStats:
    """What the filters need of one frame: mean luma, a grey thumbnail and a colour histogram."""

    luma: float
    thumb: np.ndarray  # [THUMB, THUMB] float32
    hist: np.ndarray  # [64] float32, sums to 1


def gray(rgb: np.ndarray) -> np.ndarray:
    """`[H, W, 3]` uint8 -> `[H, W]` float32 luma (BT.601 weights)."""
    return rgb.astype(np.float32) @ _LUMA


def frame_stats(rgb: np.ndarray) -> FrameStats:
    """Stats of one `[H, W, 3]` uint8 frame, from every other pixel of large frames (these are
    averages: a quarter of the pixels gives the same numbers at a quarter of the cost)."""
    if min(rgb.shape[:2]) >= 4 * THUMB:
        rgb = rgb[::2, ::2]
    g = gray(rgb)
    thumb = np.asarray(Image.fromarray(g, mode="F").resize((THUMB, THUMB), Image.Resampling.BOX))
    q = (rgb >> 6).astype(np.int32)  # 4 levels a channel: 64 colour bins
    hist = np.bincount((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).ravel(), minlength=64)
    return FrameStats(float(g.mean()), thumb, (hist / hist.sum()).astype(np.float32))


def yuv_stats(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> FrameStats:
    """`frame_stats` of a yuv420p frame (BT.601, limited range) from its planes, without an
    RGB copy: luma is 1.164 (Y - 16) exactly, and the colour histogram is taken from about
    200 x 100 pixels, whose RGB bins come from Y, U and V through `_colour_tables`."""
    step = 2 * max(1, y.shape[1] // 384)
    # Contiguous copies: five table look-ups read them, each faster than through a stride.
    yy = np.ascontiguousarray(y[::step, ::step])
    h, w = yy.shape
    uu = np.ascontiguousarray(u[:: step // 2, :: step // 2][:h, :w])
    vv = np.ascontiguousarray(v[:: step // 2, :: step // 2][:h, :w])
    luma, red, blue, green_yu, green_v = _colour_tables()
    g = luma[yy]
    row = yy.astype(np.uint16) << 8
    yu, yv = row | uu, row | vv
    green = np.clip(green_yu[yu] - green_v[vv], 0, 255).astype(np.uint8) >> 6
    hist = np.bincount((red[yv] + (green << 2) + blue[yu]).ravel(), minlength=64)
    thumb = np.asarray(Image.fromarray(g, mode="F").resize((THUMB, THUMB), Image.Resampling.BOX))
    return FrameStats(float(g.mean()), thumb, (hist / hist.sum()).astype(np.float32))


@functools.cache
def _colour_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables for `yuv_stats`: luma per Y `[256]`; the red bin x 16 per (Y, V) and the
    blue bin per (Y, U) `[65536]` uint8; green's Y, U part `[65536]` and V part `[256]` float32.

    Per frame this was float math on every sampled pixel, most of the cost of measuring it.
    The tables hold the same float32 operations on every level, so the numbers are the same
    to the bit (green, which needs all three planes, is finished per pixel).
    """
    level = np.arange(256, dtype=np.float32)
    luma = np.clip((level - 16) * (255 / 219), 0, 255)
    chroma = level - 128
    y, c = luma[:, None], chroma[None, :]

    def bins(x: np.ndarray) -> np.ndarray:
        return (np.clip(x, 0, 255).astype(np.uint8) >> 6).ravel()

    red, blue = bins(y + 1.596 * c) << 4, bins(y + 2.017 * c)
    return luma, red, blue, (y - 0.392 * c).ravel(), 0.813 * chroma


def hist_distance(a: FrameStats, b: FrameStats) -> float:
    """Half the L1 distance of two colour histograms: 0 same palette, 1 disjoint."""
    return float(np.abs(a.hist - b.hist).sum() / 2)


def motion(a: FrameStats, b: FrameStats) -> float:
    """Mean absolute change of the grey thumbnails, in 0-255 levels."""
    return float(np.abs(a.thumb - b.thumb).mean())


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the luma: low for blurred frames."""
    return _laplacian_var(gray(rgb))


def sharpness_y(y: np.ndarray) -> float:
    """`sharpness` from a limited-range Y plane: luma is 1.164 (Y - 16) and the Laplacian is
    linear, so its variance scales by 1.164 squared."""
    return _laplacian_var(y.astype(np.float32)) * (255 / 219) ** 2


def _laplacian_var(g: np.ndarray) -> float:
    if min(g.shape) < 3:
        return 0.0
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


def dhash(rgb: np.ndarray) -> int:
    """64-bit difference hash: is each of 8x8 cells brighter than its right neighbour."""
    small = Image.fromarray(gray(rgb), mode="F").resize((9, 8), Image.Resampling.BOX)
    px = np.asarray(small)
    bits = (px[:, 1:] > px[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def signature(rgb: np.ndarray) -> str:
    """22 hex digits: the dHash (structure) then the mean colour (R, G, B), which dHash ignores:
    the same layout in other colours is another shot, not a copy. Large frames are read at
    every few pixels: both are averages over 8x9 cells or the whole frame."""
    step = max(1, min(rgb.shape[:2]) // 108)
    rgb = rgb[::step, ::step]
    mean = rgb.reshape(-1, 3).mean(axis=0).round().astype(int)
    return f"{dhash(rgb):016x}" + "".join(f"{int(c):02x}" for c in mean)


def quality_reason(
    lumas: list[float], motions: list[float], sharp: float, cfg: CurationConfig, still: bool
) -> tuple[str, str] | None:
    """(reason, detail) when a segment is black, frozen or blurred; None when it is usable."""
    f = cfg.filters
    dark = sum(lu < f.black_luma for lu in lumas) / len(lumas)
    if dark >= f.black_fraction:
        return "black", f"{dark:.0%} of frames darker than luma {f.black_luma:g}"
    moved = float(np.mean(motions)) if motions else 0.0
    if not still and moved < f.frozen_motion:
        return "frozen", f"mean change {moved:.2f} levels/frame (< {f.frozen_motion:g})"
    if sharp < f.blur_sharpness:
        return "blurry", f"sharpness {sharp:.1f} (< {f.blur_sharpness:g})"
    return None
