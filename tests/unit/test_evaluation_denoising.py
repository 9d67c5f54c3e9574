"""Reference clips fitted to the render size for the held-out denoising error."""

from __future__ import annotations

import numpy as np

from evaluation.denoising import fit_clip


def test_a_clip_is_centre_cropped_to_the_aspect_then_resized() -> None:
    clip = np.zeros((20, 32, 96, 3), dtype=np.uint8)  # 3:1, three vertical bands
    clip[:, :, :32, 0] = 255  # red | green | blue
    clip[:, :, 32:64, 1] = 255
    clip[:, :, 64:, 2] = 255
    fitted = fit_clip(clip, 16, 16, 17)
    assert fitted.shape == (17, 16, 16, 3) and fitted.dtype == np.uint8
    # a square from the middle: all green, the red and blue bands cropped away
    assert (fitted[..., 1] == 255).all() and fitted[..., [0, 2]].max() == 0


def test_a_clip_shorter_than_the_render_is_skipped() -> None:
    assert fit_clip(np.zeros((9, 16, 16, 3), dtype=np.uint8), 16, 16, 17) is None


def test_an_unchanged_clip_of_the_right_size_is_kept_as_is() -> None:
    clip = np.random.default_rng(0).integers(0, 256, (17, 32, 48, 3), dtype=np.uint8)
    assert np.array_equal(fit_clip(clip, 48, 32, 17), clip)
