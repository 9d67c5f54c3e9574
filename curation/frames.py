"""Stored frames -> upright bucket frames: one swscale pass, then a crop (and a turn).

Curated clips are built from yuv420p bucket frames, the format the encoder takes, so a frame
is scaled once and never goes through RGB on its way to the clip; the filters measure its
planes (`quality.yuv_stats`) and RGB is made only for the few frames that are signed or
scored for sharpness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

from curation.buckets import Box
from curation.probe import ProbeResult


@dataclass(frozen=True)
class Geometry:
    """The scaled stored frame (`sw` x `sh`) and, once turned upright, the bucket's window."""

    sw: int
    sh: int
    x0: int
    y0: int
    bw: int
    bh: int
    turns: int  # quarter turns counter-clockwise (np.rot90's k)
    interp: str


def geometry(info: ProbeResult, bucket: tuple[int, int], box: Box, even: bool) -> Geometry:
    """Scale so `box` (display pixels) covers the bucket; `even`: sizes and offsets even, as
    4:2:0 chroma needs."""
    bw, bh = bucket
    scale = bw / (box[2] - box[0])
    turned = info.rotation in (90, 270)
    sw = max(bh if turned else bw, round(info.width * scale))
    sh = max(bw if turned else bh, round(info.height * scale))
    if even:
        sw, sh = sw + sw % 2, sh + sh % 2
    dw, dh = (sh, sw) if turned else (sw, sh)
    x0 = min(max(0, round(box[0] * scale)), dw - bw)
    y0 = min(max(0, round(box[1] * scale)), dh - bh)
    if even:
        x0, y0 = x0 - x0 % 2, y0 - y0 % 2
    interp = "AREA" if scale < 1 else "BICUBIC"
    return Geometry(sw, sh, x0, y0, bw, bh, info.rotation // 90, interp)


def rgb_converter(
    info: ProbeResult, bucket: tuple[int, int], box: Box
) -> Callable[[av.VideoFrame], np.ndarray]:
    """Stored frame -> upright `[bh, bw, 3]` uint8 bucket frame.

    Scaling the whole frame in swscale (not PIL on full-size RGB) keeps 4K/8K sources cheap.
    """
    g = geometry(info, bucket, box, even=False)

    def convert(frame: av.VideoFrame) -> np.ndarray:
        arr = frame.reformat(width=g.sw, height=g.sh, format="rgb24", interpolation=g.interp)
        out = np.rot90(arr.to_ndarray(), g.turns) if g.turns else arr.to_ndarray()
        return np.ascontiguousarray(out[g.y0 : g.y0 + g.bh, g.x0 : g.x0 + g.bw])

    return convert


def yuv_converter(
    info: ProbeResult, bucket: tuple[int, int], box: Box
) -> Callable[[av.VideoFrame], av.VideoFrame]:
    """Stored frame -> upright bucket frame in yuv420p, ready for the encoder."""
    g = geometry(info, bucket, box, even=True)
    whole = (g.sw, g.sh) == (g.bw, g.bh) and not g.turns

    def convert(frame: av.VideoFrame) -> av.VideoFrame:
        scaled = frame.reformat(width=g.sw, height=g.sh, format="yuv420p", interpolation=g.interp)
        return scaled if whole else _window(scaled, g)

    return convert


def _window(frame: av.VideoFrame, g: Geometry) -> av.VideoFrame:
    """Turn each plane upright and cut the bucket's window out of it."""
    y, u, v = (np.rot90(p, g.turns) for p in planes(frame))
    cy, cx, ch, cw = g.y0 // 2, g.x0 // 2, g.bh // 2, g.bw // 2
    window = [
        y[g.y0 : g.y0 + g.bh, g.x0 : g.x0 + g.bw],
        u[cy : cy + ch, cx : cx + cw],
        v[cy : cy + ch, cx : cx + cw],
    ]
    # from_ndarray takes the three planes one after another, as rows of the frame's width.
    packed = np.concatenate([p.ravel() for p in window]).reshape(-1, g.bw)
    return av.VideoFrame.from_ndarray(packed, format="yuv420p")


def planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U, V planes of a yuv420p frame as 2-D views (row padding cut off)."""
    return tuple(_plane(p) for p in frame.planes[:3])  # type: ignore[return-value]


def _plane(p: av.video.plane.VideoPlane) -> np.ndarray:
    rows = np.frombuffer(p, np.uint8, count=p.line_size * p.height)
    return rows.reshape(p.height, p.line_size)[:, : p.width]


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """`[H, W, 3]` uint8 of a bucket frame (for signatures and sharpness)."""
    return frame.to_ndarray(format="rgb24")
