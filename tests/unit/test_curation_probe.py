"""probe: facts of real files written here, and typed failures for files that are not video."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from curation.decode import open_input
from curation.media import write_clip
from curation.probe import ProbeFailure, ProbeResult, probe
from stagekit.hashing import sha256_file
from tests.unit.mixed_media import MIXED, write_mixed


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


def _facts(container: av.container.InputContainer) -> list[tuple]:
    """What curation reads of an opened file's streams. Not the video's pixel format: that is
    known only once a picture is decoded, and curation takes it from the frames."""
    return [
        (s.type, s.codec_context.name, s.frames, s.duration, s.time_base, s.start_time,
         (s.average_rate, s.guessed_rate, s.width, s.height) if s.type == "video"
         else (s.codec_context.sample_rate, s.codec_context.channels, s.codec_context.format.name))
        for s in container.streams
    ] + [(container.format.name, container.duration, container.start_time)]  # fmt: skip


@pytest.mark.parametrize(("vcodec", "fmt", "acodec", "pix"), MIXED)
def test_opening_without_a_picture_changes_nothing_read(
    tmp_path: Path, vcodec: str, fmt: str, acodec: str, pix: str
) -> None:
    """`open_input` skips the picture FFmpeg's stream-info search decodes while opening; the
    stream facts, the probe and every decoded frame and sample must be what a plain
    `av.open` gives."""
    path = write_mixed(tmp_path / f"m.{fmt}", vcodec, fmt, acodec, pix)
    with av.open(str(path)) as plain, open_input(path) as quick:
        assert _facts(quick) == _facts(plain)
        for kind in ("video", "audio"):
            ours = [(f.pts, f.to_ndarray().tobytes()) for f in quick.decode(**{kind: 0})]
            theirs = [(f.pts, f.to_ndarray().tobytes()) for f in plain.decode(**{kind: 0})]
            assert len(ours) > 0 and ours == theirs
            quick.seek(0)
            plain.seek(0)
    opened = probe(path, 20.0)
    assert isinstance(opened, ProbeResult) and opened.frames == 20 and opened.has_audio
    monkey = pytest.MonkeyPatch()
    monkey.setattr("curation.probe.open_input", lambda p: av.open(str(p)))
    try:
        assert probe(path, 20.0) == opened
    finally:
        monkey.undo()
