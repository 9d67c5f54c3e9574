"""probe: facts of real files written here, and typed failures for files that are not video."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from curation.media import write_clip
from curation.probe import ProbeFailure, ProbeResult, probe
from stagekit.hashing import sha256_file


def frames(n: int, w: int, h: int) -> list[np.ndarray]:
    return [np.full((h, w, 3), 8 * i, np.uint8) for i in range(n)]


def write_raw(path: Path, n: int, w: int, h: int, rotation: int = 0, fmt: str = "mp4") -> Path:
    """A video-only file through PyAV directly: any container, optional display rotation."""
    with av.open(str(path), "w", format=fmt) as c:
        stream = c.add_stream("libx264", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for i, arr in enumerate(frames(n, w, h)):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    return path


def test_probe_reads_a_clip_with_audio(tmp_path: Path) -> None:
    path = tmp_path / "a.mp4"
    audio = np.zeros((2, 22050), np.float32)
    write_clip(path, frames(30, 96, 64), 30.0, audio=audio, sample_rate=22050)
    info = probe(path)
    assert isinstance(info, ProbeResult)
    assert (info.width, info.height, info.frames, info.fps) == (96, 64, 30, 30.0)
    assert info.duration_s == 1.0 and info.video_codec == "h264"
    assert info.has_audio and (info.audio_sample_rate, info.audio_channels) == (22050, 2)
    assert info.sha256 == sha256_file(path)


def test_probe_without_audio(tmp_path: Path) -> None:
    info = probe(write_raw(tmp_path / "v.mp4", 10, 64, 64))
    assert isinstance(info, ProbeResult)
    assert not info.has_audio and info.audio_sample_rate is None and info.audio_channels is None


def test_probe_counts_frames_when_the_container_does_not(tmp_path: Path) -> None:
    info = probe(write_raw(tmp_path / "v.mkv", 13, 64, 32, fmt="matroska"))
    assert isinstance(info, ProbeResult)
    assert info.container == "matroska,webm" and info.frames == 13


def test_probe_reports_rotation_and_display_size(tmp_path: Path) -> None:
    info = probe(write_raw(tmp_path / "r.mp4", 5, 64, 32, rotation=90))
    assert isinstance(info, ProbeResult)
    assert info.rotation == 90 and (info.width, info.height) == (64, 32)
    assert info.display_size == (32, 64)


def test_garbage_and_truncated_files_are_typed_failures(tmp_path: Path) -> None:
    good = write_raw(tmp_path / "good.mp4", 10, 64, 64).read_bytes()
    (tmp_path / "garbage.mp4").write_bytes(b"definitely not a video" * 50)
    (tmp_path / "truncated.mp4").write_bytes(good[: len(good) // 2])  # moov atom is at the end
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name in ("garbage.mp4", "truncated.mp4", "empty.mp4"):
        result = probe(tmp_path / name)
        assert isinstance(result, ProbeFailure), name
        assert result.reason == "undecodable" and result.detail and "\n" not in result.detail


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w", format="mp4") as c:
        stream = c.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 16000), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = 16000, 0
        c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    result = probe(path)
    assert isinstance(result, ProbeFailure) and result.reason == "no_video_stream"
