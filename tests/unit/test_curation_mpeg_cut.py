"""Cut MPEG program streams (.mpg) and transport streams (.ts), generated and truncated here.

These containers list no length, so a cut copy reads as a shorter, complete file; curation
must still call it `truncated` and say how far its video decodes, like a cut mp4 or AVI.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from curation.card import DatasetCard
from curation.config import CurationConfig
from curation.curate import curate
from curation.mpeg_framing import stops_mid_packet
from curation.probe import ProbeResult, probe
from ltx.buckets import BucketRules
from stagekit.files import read_jsonl

RULES = BucketRules(spatial=32, temporal=8)
DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "curation" / "default.yaml"
CARD = DatasetCard(
    client="acme", adapter="mascot", trigger="zorblat", class_noun="mascot", owner="t", rights="t"
)
CLIP_S = 17 / 24
# container format, video codec, suffix: a DVD-style program stream, a broadcast-style
# transport stream (h264, as cameras write .mts)
KINDS = {"mpg": ("mpeg", "mpeg2video"), "ts": ("mpegts", "libx264")}


def textured(n: int, seed: int, w: int = 96, h: int = 64) -> list[np.ndarray]:
    """Random colour cells scrolling 2 px a frame: sharp, moving, unique per seed."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 255, (h // 8 + 2, w // 8 + 2 + n, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(cells, 8, 0), 8, 1)
    return [np.ascontiguousarray(big[:h, 2 * i : 2 * i + w]) for i in range(n)]


def write_mpeg(path: Path, frames: list[np.ndarray]) -> Path:
    """3 s of 24 fps video with MP2 sound in an MPEG program or transport stream."""
    fmt, codec = KINDS[path.suffix[1:]]
    opts = {"g": "8", "bf": "0"} | ({"qscale": "2"} if codec == "mpeg2video" else {})
    with av.open(str(path), "w", format=fmt) as c:
        video = c.add_stream(codec, rate=24, options=opts)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        sound = c.add_stream("mp2", rate=44100, layout="mono")
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            c.mux(video.encode(frame))
        c.mux(video.encode(None))
        t = np.arange(round(len(frames) / 24 * 44100)) / 44100
        chunk = av.AudioFrame.from_ndarray(
            (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], "fltp", "mono"
        )
        chunk.sample_rate, chunk.pts = 44100, 0
        c.mux(sound.encode(chunk))
        c.mux(sound.encode(None))
    return path


def cut_copy(src: Path, dest: Path, at_s: float) -> Path:
    """`src` cut 101 bytes into the first video packet (with a known position) at or after
    `at_s` from the first frame: a copy that stops at a random byte, not a packet boundary."""
    with av.open(str(src)) as c:
        stream = c.streams.video[0]
        packets = sorted(
            (float(p.pts * p.time_base), p.pos)
            for p in c.demux(stream)
            if p.size and p.pts is not None
        )
    first = packets[0][0]
    pos = next(pos for t, pos in packets if t - first >= at_s and pos is not None)
    dest.write_bytes(src.read_bytes()[: pos + 101])
    return dest


def decodes_to(path: Path) -> float:
    """Seconds of video a plain PyAV decode gets out of `path`: the oracle for "how far"."""
    with av.open(str(path)) as c:
        frames = 0
        try:
            for _ in c.decode(video=0):
                frames += 1
        except av.FFmpegError:
            pass
    return frames / 24


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("mpeg_cut")
    raw = root / "raw"
    raw.mkdir()
    for suffix in KINDS:
        whole = write_mpeg(root / f"whole.{suffix}", textured(72, 1))
        (raw / f"intact.{suffix}").write_bytes(whole.read_bytes())
        cut_copy(whole, raw / f"cut_early.{suffix}", 0.15)  # less than one 0.71 s clip
        cut_copy(whole, raw / f"cut_late.{suffix}", 2.0)  # two whole clips before the cut
    tree = {**yaml.safe_load(DEFAULT.read_text()), "workers": 1}
    # The copies share their picture: dedupe would drop all but one, and only the cut is
    # under test.
    filters = {"blur_sharpness": 0, "frozen_motion": 0, "dedupe": False}
    cfg = CurationConfig.model_validate({**tree, "filters": filters, "scenes": {"detect": False}})
    curate(raw, root / "out", CARD, cfg, RULES)
    dropped = read_jsonl(root / "out" / "quarantine.jsonl")
    return {
        "raw": raw,
        "rows": read_jsonl(root / "out" / "manifest.jsonl"),
        "files": {q["source"]: q for q in dropped if q["level"] == "file"},
        "segments": [q for q in dropped if q["level"] == "segment"],
    }


def rows_of(run: dict, source: str) -> list[dict]:
    return sorted((r for r in run["rows"] if r["source"] == source), key=lambda r: r["start_s"])


@pytest.mark.parametrize("suffix", KINDS)
def test_an_intact_stream_is_kept_whole(run: dict, suffix: str) -> None:
    name = f"intact.{suffix}"
    info = probe(run["raw"] / name)
    assert isinstance(info, ProbeResult) and info.truncated_at is None
    assert info.duration_s == pytest.approx(3.0, abs=1 / 24)
    assert name not in run["files"]
    assert not [q for q in run["segments"] if q["source"] == name]
    assert len(rows_of(run, name)) == int(3.0 / CLIP_S)


@pytest.mark.parametrize("suffix", KINDS)
def test_a_stream_cut_before_one_clip_is_truncated_not_too_short(run: dict, suffix: str) -> None:
    name = f"cut_early.{suffix}"
    q = run["files"][name]
    assert q["reason"] == "truncated"
    assert q["detail"].startswith("the file is cut") and "too short for one clip" in q["detail"]
    reached = float(q["detail"].split("decodes to ")[1].split(" s")[0])
    assert 0.1 < reached < CLIP_S
    assert reached == pytest.approx(decodes_to(run["raw"] / name), abs=2 / 24)


@pytest.mark.parametrize("suffix", KINDS)
def test_a_stream_cut_late_keeps_the_clips_before_the_cut(run: dict, suffix: str) -> None:
    name = f"cut_late.{suffix}"
    assert name not in run["files"]
    (tail,) = [q for q in run["segments"] if q["source"] == name]
    assert tail["reason"] == "truncated" and tail["detail"].startswith("the file is cut")
    assert "the clips before the cut are kept" in tail["detail"]
    reached = float(tail["detail"].split("decodes to ")[1].split(" s")[0])
    assert reached == pytest.approx(decodes_to(run["raw"] / name), abs=2 / 24)
    rows = rows_of(run, name)
    assert len(rows) == int(reached / CLIP_S) >= 2
    # Spans are in source time (these streams start at a non-zero timestamp), the clips' too.
    start = rows[0]["start_s"]
    assert tail["start_s"] == pytest.approx(start + reached, abs=0.01)  # detail: 2 decimals
    assert rows[-1]["end_s"] <= tail["start_s"] + 1e-6 <= tail["end_s"] + 1e-6


@pytest.mark.parametrize("suffix", KINDS)
def test_framing_tells_every_random_cut_from_the_whole_file(tmp_path: Path, suffix: str) -> None:
    """Cut at 40 byte offsets, none on a packet boundary (188-byte TS packets, 2048-byte PS
    packs, which such a cut could not be told from an end by): every one is seen as cut."""
    whole = write_mpeg(tmp_path / f"whole.{suffix}", textured(72, 2))
    fmt = KINDS[suffix][0]
    assert not stops_mid_packet(whole, fmt)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    offsets = [o for o in np.linspace(4001, len(data) - 1, 40).astype(int) if o % 188 and o % 2048]
    for offset in offsets:
        cut.write_bytes(data[:offset])
        assert stops_mid_packet(cut, fmt), offset


def test_framing_reads_192_byte_packets_as_blu_ray_and_avchd_write_them(tmp_path: Path) -> None:
    """.m2ts/.mts: each 188-byte packet behind a 4-byte timecode. Intact: not cut; cut at
    40 offsets off the 192-byte grid: cut."""
    whole = tmp_path / "whole.m2ts"
    with av.open(str(whole), "w", format="mpegts", options={"mpegts_m2ts_mode": "1"}) as c:
        video = c.add_stream("libx264", rate=24, options={"g": "8"})
        video.height, video.width, video.pix_fmt = 64, 96, "yuv420p"
        for i, arr in enumerate(textured(48, 3)):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            c.mux(video.encode(frame))
        c.mux(video.encode(None))
    data = whole.read_bytes()
    assert len(data) % 192 == 0 and len(data) % 188  # the 192-byte layout, not 188
    assert not stops_mid_packet(whole, "mpegts")
    cut = tmp_path / "cut.m2ts"
    for offset in [o for o in np.linspace(3001, len(data) - 1, 40).astype(int) if o % 192]:
        cut.write_bytes(data[:offset])
        assert stops_mid_packet(cut, "mpegts"), offset
