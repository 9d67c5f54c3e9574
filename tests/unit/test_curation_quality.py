"""The per-frame statistics curation measures on yuv420p bucket frames."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from curation.quality import THUMB, yuv_stats


def direct_stats(
    y: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Luma, thumbnail and colour histogram by float math on every sampled pixel: what
    `yuv_stats` computed before its lookup tables, and must still give to the bit (scene cuts
    and the frozen filter compare these numbers against thresholds)."""
    step = 2 * max(1, y.shape[1] // 384)
    luma_y = y[::step, ::step].astype(np.float32)
    h, w = luma_y.shape
    g = np.clip((luma_y - 16) * (255 / 219), 0, 255)
    cb = u[:: step // 2, :: step // 2][:h, :w].astype(np.float32) - 128
    cr = v[:: step // 2, :: step // 2][:h, :w].astype(np.float32) - 128
    rgb = np.stack([g + 1.596 * cr, g - 0.392 * cb - 0.813 * cr, g + 2.017 * cb], axis=-1)
    q = (np.clip(rgb, 0, 255).astype(np.uint8) >> 6).astype(np.int32)
    hist = np.bincount((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).ravel(), minlength=64)
    thumb = np.asarray(Image.fromarray(g, mode="F").resize((THUMB, THUMB), Image.Resampling.BOX))
    return float(g.mean()), thumb, (hist / hist.sum()).astype(np.float32)


@pytest.mark.parametrize("size", [(96, 64), (512, 288), (800, 448), (1920, 1080)])
def test_yuv_stats_match_the_direct_formula_exactly(size: tuple[int, int]) -> None:
    w, h = size
    rng = np.random.default_rng(w)
    y = rng.integers(0, 256, (h, w), dtype=np.uint8)  # every level, out-of-range ones too
    u, v = (rng.integers(0, 256, (h // 2, w // 2), dtype=np.uint8) for _ in range(2))
    stats = yuv_stats(y, u, v)
    luma, thumb, hist = direct_stats(y, u, v)
    assert stats.luma == luma
    assert np.array_equal(stats.thumb, thumb) and np.array_equal(stats.hist, hist)


def test_every_chroma_pair_bins_as_the_direct_formula_does() -> None:
    """Every (U, V) pair at every fifth Y level: the colour histograms agree."""
    u, v = (a.astype(np.uint8) for a in np.meshgrid(np.arange(256), np.arange(256)))
    for level in range(0, 256, 5):
        y = np.full((512, 512), level, np.uint8)
        # a 512x512 frame (sampled at every other pixel) whose 256x256 chroma is every (U, V)
        stats = yuv_stats(y, u, v)
        assert np.array_equal(stats.hist, direct_stats(y, u, v)[2]), level
