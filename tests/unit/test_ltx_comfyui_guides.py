"""ComfyUI's IC-LoRA guides (`LTXVAddGuide` at frame_idx 0, strength 1, the factor N from
`Get IC-LoRA Parameters`) land where our training appends references: the positions of
`ltx.comfyui_math.guide_positions` (a transcription of ComfyUI's dilated grid, end-offset and
filler drop) are compared with `ltx.conditioning.reference_coords` on the tiny model.

What the comparison finds: the same tokens in the same order with the same pixel coordinates
and the same time in pixel frames; the time in seconds can differ by one float32 step, because
ComfyUI multiplies by 1 / frame_rate where diffusers divides by fps."""

from __future__ import annotations

import pytest
import torch

from ltx.comfyui_math import guide_positions
from ltx.conditioning import reference_coords
from ltx.tiny_build import build_tiny_pipeline

FPS = 24.0
TARGET = (4, 6)  # the target's latent height and width (tokens)


@pytest.fixture(scope="module")
def transformer() -> torch.nn.Module:
    return build_tiny_pipeline(0).transformer


def references(transformer: torch.nn.Module, frames: list[int], factor: int) -> list[torch.Tensor]:
    """Reference latents [1, C, f, H/N, W/N] as preprocess caches them (values unused)."""
    c = transformer.config.in_channels
    return [torch.zeros(1, c, f, TARGET[0] // factor, TARGET[1] // factor) for f in frames]


def compare(transformer: torch.nn.Module, frames: list[int], factor: int, fps: float):
    """(ComfyUI's positions, its kept tokens per guide, ours) for the references in order."""
    refs = references(transformer, frames, factor)
    ours = torch.cat([reference_coords(transformer, r, TARGET, fps) for r in refs], dim=2)
    shapes = [tuple(r.shape[2:]) for r in refs]
    theirs, kept = guide_positions(shapes, factor, fps, tuple(transformer.rope.scale_factors))
    return theirs, kept, ours, [r[0, 0].numel() for r in refs]


@pytest.mark.parametrize(
    ("frames", "factor"),
    [([3], 1), ([3], 2), ([3, 1], 1), ([3, 1], 2)],
    ids=["video-n1", "video-n2", "sheet-n1", "sheet-n2"],
)
def test_comfyui_guides_take_our_reference_positions(transformer, frames, factor) -> None:
    """One video reference, or a sheet of a video and a still appended in order, at N = 1, 2:
    ComfyUI keeps exactly our token count per guide (the dilated grid's filler dropped), and
    gives the kept tokens our pixel coordinates and, in pixel frames, our times."""
    theirs, kept, ours, counts = compare(transformer, frames, factor, FPS)
    assert kept == counts
    assert theirs.shape == ours.shape
    assert torch.equal(theirs[:, 1:], ours[:, 1:])  # height, width: [start, end) in pixels
    in_frames, _, ours_in_frames, _ = compare(transformer, frames, factor, 1.0)
    assert torch.equal(in_frames, ours_in_frames)  # time before any division: identical


@pytest.mark.parametrize("fps", [24.0, 25.0, 30.0])
def test_comfyui_time_is_ours_within_one_float32_step(transformer, fps: float) -> None:
    """In seconds the time axis is x * (1 / fps) in ComfyUI and x / fps in diffusers: equal or
    one float32 step apart, never more."""
    theirs, _, ours, _ = compare(transformer, [3, 1], 2, fps)
    up = torch.nextafter(ours[:, 0], torch.tensor(float("inf")))
    down = torch.nextafter(ours[:, 0], torch.tensor(float("-inf")))
    t = theirs[:, 0]
    assert bool(((t == ours[:, 0]) | (t == up) | (t == down)).all())


def test_the_dilated_grid_is_what_filler_dropping_undoes(transformer) -> None:
    """At N = 2 a guide enters ComfyUI as the target's full grid (pre_filter_count F*H*W),
    three quarters filler; the end offset makes each kept token span N latent cells."""
    f, h, w = 3, TARGET[0] // 2, TARGET[1] // 2
    theirs, kept, _, _ = compare(transformer, [f], 2, FPS)
    assert kept == [f * h * w] and f * TARGET[0] * TARGET[1] == 4 * kept[0]
    cell = transformer.rope.scale_factors[1]
    spans = theirs[0, 1:, :, 1] - theirs[0, 1:, :, 0]
    assert bool((spans == 2 * cell).all())
