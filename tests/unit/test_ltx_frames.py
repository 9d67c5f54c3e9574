"""Frame reading for encoding: decord and PyAV give the same frames; resize on decode; errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ltx.frames import decord_available, frame_backend, read_frames
from ltx.sampling import Clip, read_clip, write_clip
from stagekit.errors import UserError

needs_decord = pytest.mark.skipif(not decord_available(), reason="decord is not installed")


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """25 frames of 96x64 noise-free gradients, h264 as curation writes it."""
    t = np.arange(25)[:, None, None, None]
    ramp = np.linspace(0, 255, 96)[None, None, :, None]
    video = (ramp + 8 * t + np.zeros((25, 64, 96, 3))) % 256
    path = tmp_path_factory.mktemp("frames") / "clip.mp4"
    write_clip(path, Clip(video.astype(np.uint8), 24.0))
    return path


def test_pyav_reads_what_read_clip_reads(clip_path: Path) -> None:
    frames = read_frames(clip_path, range(17), backend="pyav")
    assert frames.shape == (17, 64, 96, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, read_clip(clip_path).video[:17])


@needs_decord
def test_decord_and_pyav_give_identical_frames_by_index(clip_path: Path) -> None:
    indices = [0, 3, 4, 16, 24]
    a = read_frames(clip_path, indices, backend="decord")
    b = read_frames(clip_path, indices, backend="pyav")
    assert np.array_equal(a, b)
    assert np.array_equal(a, read_clip(clip_path).video[indices])


@pytest.mark.parametrize("backend", ["pyav", pytest.param("decord", marks=needs_decord)])
def test_resize_on_decode(clip_path: Path, backend: str) -> None:
    frames = read_frames(clip_path, range(9), size=(64, 32), backend=backend)
    assert frames.shape == (9, 32, 64, 3)
    mean = frames.mean(axis=(1, 3))[0]  # the horizontal ramp survives the resize
    assert mean[0] < mean[-1]


def test_decord_is_not_used_for_widths_it_mis_sizes() -> None:
    assert frame_backend("decord", width=48) == "pyav"  # dmlc/decord#336
    assert frame_backend("auto", width=64) == ("decord" if decord_available() else "pyav")
    with pytest.raises(UserError, match="not one of"):
        frame_backend("opencv")


@pytest.mark.parametrize("backend", ["pyav", pytest.param("decord", marks=needs_decord)])
def test_asking_past_the_end_names_the_clip(clip_path: Path, backend: str) -> None:
    with pytest.raises(UserError, match=r"clip\.mp4 has 25 frames, frame 25 was asked for"):
        read_frames(clip_path, range(26), backend=backend)
