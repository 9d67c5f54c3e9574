"""Real-world damage on generated files: each stream and span is judged by itself.

A bad audio packet costs the audio of the clips it touches, a bad video packet costs its span,
a cut file keeps what decodes before the cut, and a repeat-frame AVI is complete.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from curation.card import DatasetCard
from curation.config import CurationConfig
from curation.curate import curate
from curation.probe import ProbeResult, probe
from ltx.buckets import BucketRules
from stagekit.files import read_jsonl

RULES = BucketRules(spatial=32, temporal=8)
DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "curation" / "default.yaml"
CARD = DatasetCard(
    client="acme", adapter="mascot", trigger="zorblat", class_noun="mascot", owner="t", rights="t"
)
CLIP_S = 17 / 24


def textured(n: int, seed: int, w: int = 96, h: int = 64) -> list[np.ndarray]:
    """Random colour cells scrolling 2 px a frame: sharp, moving, unique per seed."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 255, (h // 8 + 2, w // 8 + 2 + n, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(cells, 8, 0), 8, 1)
    return [np.ascontiguousarray(big[:h, 2 * i : 2 * i + w]) for i in range(n)]


def write_avi(path: Path, frames: list[np.ndarray], rate: int, pts: list[int] | None = None,
              audio: bool = True) -> Path:  # fmt: skip
    """MPEG-4 Part 2 (+ MP3) in AVI, as old cameras and capture cards write it.

    Sparse `pts` make the muxer write repeat-frame ("dropped") index entries between them.
    """
    with av.open(str(path), "w", format="avi") as c:
        video = c.add_stream("mpeg4", rate=rate, options={"g": "8", "bf": "0", "qscale": "2"})
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        sound = c.add_stream("mp3", rate=44100, layout="mono") if audio else None
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i if pts is None else pts[i]
            c.mux(video.encode(frame))
        c.mux(video.encode(None))
        if sound is not None:
            t = np.arange(round(len(frames) / rate * 44100)) / 44100
            # A rising chirp: no two moments sound alike, so any shift in time shows.
            wave = (0.3 * np.sin(2 * np.pi * (200 * t + 300 * t * t))).astype(np.float32)[None]
            chunk = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 44100, 0
            c.mux(sound.encode(chunk))
            c.mux(sound.encode(None))
    return path


def write_mp4(path: Path, frames: list[np.ndarray], faststart: bool = False) -> Path:
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=opts) as c:
        video = c.add_stream("libx264", rate=Fraction(24), options={"g": "8"})
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            c.mux(video.encode(frame))
        c.mux(video.encode(None))
    return path


def corrupt_packet(path: Path, kind: str, near_s: float) -> float:
    """Overwrite the payload of the `kind` packet nearest `near_s` with junk; its time."""
    with av.open(str(path)) as c:
        packets = [
            (float(p.pts * p.time_base), p.pos, p.size)
            for p in c.demux()
            if p.stream.type == kind and p.size and p.pts is not None
        ]
    t, pos, size = min(packets, key=lambda p: abs(p[0] - near_s))
    data = bytearray(path.read_bytes())
    data[pos : pos + size] = b"\x55" * size
    path.write_bytes(bytes(data))
    return t


def config(**changes: object) -> CurationConfig:
    tree = {**yaml.safe_load(DEFAULT.read_text()), "workers": 1}
    return CurationConfig.model_validate({**tree, **changes})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("damage")
    raw = root / "raw"
    raw.mkdir()
    bad_audio_t = corrupt_packet(
        write_avi(raw / "bad_audio.avi", textured(60, 1), 24), "audio", 1.0
    )
    write_avi(raw / "intact.avi", textured(60, 1), 24)  # the same file, undamaged
    ramp = [np.full((64, 96, 3), 20 + 10 * k, np.uint8) for k in range(20)]
    write_avi(raw / "repeat.avi", ramp, 15, pts=[6 * k for k in range(20)], audio=False)
    fs = write_mp4(root / "long.mp4", textured(72, 3), faststart=True).read_bytes()
    (raw / "cut_late.mp4").write_bytes(fs[: len(fs) * 6 // 10])
    (raw / "cut_early.mp4").write_bytes(fs[: len(fs) * 2 // 10])
    bad_video_t = corrupt_packet(write_mp4(raw / "bad_video.mp4", textured(96, 4)), "video", 2.0)
    # Flat ramps are featureless and cut-free by design: only the damage is under test here.
    # (Dedupe off: the intact copy is kept beside the damaged one to compare their audio.)
    filters = {"blur_sharpness": 0, "frozen_motion": 0, "dedupe": False}
    cfg = config(filters=filters, scenes={"detect": False})
    summary = curate(raw, root / "out", CARD, cfg, RULES)
    dropped = read_jsonl(root / "out" / "quarantine.jsonl")
    return {
        "raw": raw,
        "out": root / "out",
        "summary": summary,
        "rows": read_jsonl(root / "out" / "manifest.jsonl"),
        "files": {q["source"]: q for q in dropped if q["level"] == "file"},
        "segments": [q for q in dropped if q["level"] == "segment"],
        "bad_audio_t": bad_audio_t,
        "bad_video_t": bad_video_t,
    }


def rows_of(run: dict, source: str) -> list[dict]:
    return sorted((r for r in run["rows"] if r["source"] == source), key=lambda r: r["start_s"])


def decoded(run: dict, row: dict) -> tuple[list[np.ndarray], int]:
    """A curated clip's frames and its audio sample count (0: no audio track)."""
    with av.open(str(run["out"] / row["path"])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(run["out"] / row["path"])) as c:
        samples = sum(f.samples for f in c.decode(audio=0)) if c.streams.audio else 0
    return frames, samples


def test_a_bad_audio_packet_costs_only_the_audio_it_touches(run: dict) -> None:
    rows = rows_of(run, "bad_audio.avi")
    assert "bad_audio.avi" not in run["files"]
    assert [r["start_s"] for r in rows] == pytest.approx([0.0, CLIP_S, 2 * CLIP_S], abs=1e-5)
    hit = [r for r in rows if r["start_s"] <= run["bad_audio_t"] < r["end_s"] + 0.05]
    assert len(hit) == 1  # the packet at ~1.0 s lies in the second clip
    (clip,) = hit
    assert clip["has_audio"] is False and clip["audio_sample_rate"] is None
    (repair,) = clip["repairs"]
    assert (repair["what"], repair["action"]) == ("audio", "dropped")
    assert "damaged audio at" in repair["detail"] and "Invalid data" in repair["detail"]
    for row in rows:
        frames, samples = decoded(run, row)
        assert len(frames) == 17  # the video of every clip is whole
        assert (samples > 0) == (row is not clip) and row["has_audio"] == (row is not clip)
    assert not [q for q in run["segments"] if q["source"] == "bad_audio.avi"]


def test_the_audio_after_a_bad_packet_stays_in_sync(run: dict) -> None:
    """The last clip's sound lines up with the intact copy's: a lost packet became silence of
    its length (one MP3 packet is 26 ms, 418 samples at 16 kHz), not a skip."""
    waves = []
    for source in ("bad_audio.avi", "intact.avi"):
        last = rows_of(run, source)[-1]
        with av.open(str(run["out"] / last["path"])) as c:
            waves.append(np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)]))
    bad, good = waves[0][2000:8000], waves[1]
    lags = range(-600, 601)
    score = [float(np.dot(bad, good[2000 + k : 8000 + k])) for k in lags]
    assert abs(lags[int(np.argmax(score))]) <= 2
    assert np.corrcoef(bad, good[2000:8000])[0, 1] > 0.95


def test_repeat_frame_avi_is_complete_and_conformed_by_time(run: dict) -> None:
    info = probe(run["raw"] / "repeat.avi")
    assert isinstance(info, ProbeResult) and info.truncated_at is None
    assert info.duration_s == pytest.approx(115 / 15, abs=0.01)  # the index lists 115 frames
    assert info.frames == 20 and info.effective_fps == pytest.approx(20 / (115 / 15), abs=0.01)
    assert "repeat.avi" not in run["files"]
    rows = rows_of(run, "repeat.avi")
    assert len(rows) == int(115 / 15 * 24) // 17  # the whole 7.67 s timeline, cut into clips
    for row in rows:
        assert row["source_effective_fps"] == pytest.approx(2.61, abs=0.01)
        assert row["source_fps"] == 15.0
        (held,) = row["repairs"]
        assert (held["what"], held["action"]) == ("video", "held")
        frames, _ = decoded(run, row)
        shown = [round((f.mean() - 20) / 10) for f in frames]
        slots = [row["start_s"] + i / 24 for i in range(17)]
        assert shown == [int(t / 0.4 + 1e-6) for t in slots]  # stored frame k at k * 0.4 s


def test_a_file_cut_late_keeps_what_decodes(run: dict) -> None:
    rows = rows_of(run, "cut_late.mp4")
    (tail,) = [q for q in run["segments"] if q["source"] == "cut_late.mp4"]
    assert tail["reason"] == "truncated" and tail["end_s"] == pytest.approx(3.0)
    assert 1.0 < tail["start_s"] < 2.4
    assert f"decodes to {tail['start_s']:.2f} s of the 3.00 s" in tail["detail"]
    assert len(rows) == int(tail["start_s"] / CLIP_S) and rows[-1]["end_s"] <= tail["start_s"]
    assert all(len(decoded(run, r)[0]) == 17 for r in rows)


def test_a_file_cut_early_is_truncated_with_how_far_it_decodes(run: dict) -> None:
    q = run["files"]["cut_early.mp4"]
    assert q["reason"] == "truncated"
    assert "decodes to 0." in q["detail"] and "of the 3.00 s its container lists" in q["detail"]


def test_a_bad_video_packet_costs_its_span(run: dict) -> None:
    rows = rows_of(run, "bad_video.mp4")
    (damage,) = [q for q in run["segments"] if q["source"] == "bad_video.mp4"]
    assert damage["reason"] == "damaged_video"
    t = run["bad_video_t"]
    assert damage["start_s"] <= t < damage["end_s"] <= t + 8 / 24 + 1e-6  # to the next keyframe
    assert "bad_video.mp4" not in run["files"]
    kept_s = len(rows) * CLIP_S
    assert kept_s >= 4.0 - CLIP_S - (damage["end_s"] - damage["start_s"]) - CLIP_S
    assert all(r["end_s"] <= damage["start_s"] or r["start_s"] >= damage["end_s"] for r in rows)
    assert all(len(decoded(run, r)[0]) == 17 for r in rows)
