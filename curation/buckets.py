"""Aspect-ratio buckets: which shapes exist (from the model's rules) and which one a clip gets."""

from __future__ import annotations

import math

from curation.config import CurationConfig
from ltx.buckets import BucketRules
from stagekit.errors import UserError

Box = tuple[float, float, float, float]  # left, top, right, bottom in display pixels


def resolve_buckets(cfg: CurationConfig, rules: BucketRules) -> list[tuple[int, int]]:
    """The configured buckets, or one per aspect ratio under the pixel budget; all checked."""
    if cfg.buckets is not None:
        buckets = [tuple(b) for b in cfg.buckets]
    else:
        assert cfg.pixel_budget is not None
        buckets = budget_buckets(cfg.pixel_budget, cfg.aspect_ratios, rules.spatial)
    for width, height in buckets:
        try:
            rules.check(width, height, cfg.frames)
        except ValueError as e:
            raise UserError(
                f"curation bucket [{width}, {height}] x {cfg.frames} frames is invalid: {e}; "
                "fix curation.buckets / curation.frames"
            ) from e
    return buckets  # type: ignore[return-value]


def budget_buckets(budget: int, ratios: list[float], spatial: int) -> list[tuple[int, int]]:
    """Per ratio, the multiple-of-`spatial` shape with area <= `budget` nearest that ratio.

    Ties in ratio go to the larger area; shapes two ratios share appear once.
    """
    out: list[tuple[int, int]] = []
    for ratio in ratios:
        best: tuple[float, int, tuple[int, int]] | None = None
        for height in range(spatial, math.isqrt(budget * 64) + spatial, spatial):
            width = max(spatial, round(height * ratio / spatial) * spatial)
            if width * height > budget:
                width = (budget // height) // spatial * spatial
            if width < spatial:
                continue
            key = (abs(math.log(width / height / ratio)), -width * height, (width, height))
            best = key if best is None or key < best else best
        if best is None:
            raise UserError(
                f"curation.pixel_budget {budget} is below one {spatial}x{spatial} tile: raise it"
            )
        if best[2] not in out:
            out.append(best[2])
    return out


def nearest_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest (in log space, so 2:1 and 1:2 are symmetric)."""
    aspect = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - aspect))


def cover_box(content: Box, bucket: tuple[int, int]) -> Box:
    """The centred region of `content` with the bucket's aspect ratio (cover, then crop)."""
    left, top, right, bottom = content
    w, h = right - left, bottom - top
    scale = max(bucket[0] / w, bucket[1] / h)
    cw, ch = bucket[0] / scale, bucket[1] / scale
    cx, cy = left + w / 2, top + h / 2
    return (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)


def upscale_needed(box: Box, bucket: tuple[int, int]) -> float:
    """How much the cropped region must be enlarged to fill the bucket (<= 1: downscale)."""
    return bucket[0] / (box[2] - box[0])


def area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])
