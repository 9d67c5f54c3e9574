"""Bad and unusual inputs, and every filter, in one real curation run over generated media.

Each input ends curated or quarantined with the right reason code, and the run completes.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from PIL import Image, ImageFilter

from curation.card import DatasetCard
from curation.config import CurationConfig
from curation.curate import curate, format_summary
from curation.ingest import list_inputs
from curation.media import write_clip
from ltx.buckets import BucketRules
from stagekit.files import read_jsonl
from stagekit.hashing import sha256_file

RULES = BucketRules(spatial=32, temporal=8)
DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "curation" / "default.yaml"
CARD = DatasetCard(
    client="acme", adapter="mascot", trigger="zorblat", class_noun="mascot", owner="t", rights="t"
)
NON_ASCII = "clip é 日本 1.mp4"


def textured(n: int, w: int, h: int, seed: int, cell: int = 8) -> list[np.ndarray]:
    """Random colour cells scrolling 2 px a frame: sharp, moving, unique per seed."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 255, (h // cell + 2, w // cell + 2 + n, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(cells, cell, 0), cell, 1)
    return [np.ascontiguousarray(big[:h, 2 * i : 2 * i + w]) for i in range(n)]


def write_raw_video(
    path: Path,
    frames: list[np.ndarray],
    pts: list[int] | None = None,
    rate: int = 24,
    rotation: int = 0,
    faststart: bool = False,
) -> Path:
    """Video-only h264 through PyAV directly: explicit timestamps (1/1000 s) and rotation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=opts) as c:
        stream = c.add_stream("libx264", rate=Fraction(rate), options={"g": "8"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i if pts is None else pts[i]
            if pts is not None:
                frame.time_base = Fraction(1, 1000)
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    return path


VFR_PTS = [sum((20, 62)[k % 2] for k in range(i)) for i in range(40)]  # 20/62 ms alternating


def vfr_frames() -> list[np.ndarray]:
    """Frame k: texture on top, a flat band at the bottom at grey level 20 + 5k."""
    out = []
    for k, tex in enumerate(textured(40, 96, 64, 11)):
        tex = tex.copy()
        tex[48:] = 20 + 5 * k
        out.append(tex)
    return out


def build_raw(root: Path) -> tuple[Path, Path]:
    raw, ref = root / "dataset" / "raw", root / "dataset" / "reference"
    (raw / "nested").mkdir(parents=True)
    ref.mkdir()
    tex = textured(30, 96, 64, 1)
    write_clip(raw / "tex.mp4", tex, 24.0)
    (raw / "tex_again.mp4").write_bytes((raw / "tex.mp4").read_bytes())
    big = [np.asarray(Image.fromarray(f).resize((144, 96), Image.Resampling.NEAREST)) for f in tex]
    write_clip(raw / "nested" / "tex_reencoded.mp4", big, 24.0, crf=28)
    os.symlink("tex.mp4", raw / "inside_link.mp4")
    outside = root / "elsewhere.mp4"
    write_clip(outside, textured(20, 64, 64, 2), 24.0)
    os.symlink(outside, raw / "outside.mp4")
    (raw / "empty.mp4").write_bytes(b"")
    (raw / "readme.mp4").write_text("this is a text file, not a video\n" * 20)
    noise = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), np.uint8) for i in range(48)]
    data = write_raw_video(root / "fs.mp4", noise, faststart=True).read_bytes()
    (raw / "cut.mp4").write_bytes(data[: len(data) * 3 // 10])
    (raw / "no_index.mp4").write_bytes((raw / "tex.mp4").read_bytes()[:3000])
    _write_8k(raw / "8k.mp4")
    write_raw_video(raw / "phone.mp4", textured(20, 128, 64, 4), rotation=90)
    write_raw_video(raw / "vfr.mp4", vfr_frames(), pts=VFR_PTS)
    write_raw_video(raw / "silent.mp4", textured(20, 64, 64, 5))
    _write_audio_only(raw / "audio_only.mp4")
    (raw / "voice.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVE")
    tone = (0.2 * np.sin(np.arange(40000) / 48000 * 2 * np.pi * 330))[None].astype(np.float32)
    write_clip(raw / NON_ASCII, textured(20, 64, 64, 6), 24.0, audio=tone, sample_rate=48000)
    (raw / NON_ASCII).with_suffix(".txt").write_text("zorblat mascot, non-ASCII name")
    write_clip(raw / "black.mp4", [np.full((64, 96, 3), 4, np.uint8)] * 20, 24.0)
    write_clip(raw / "frozen.mp4", textured(1, 96, 64, 7) * 20, 24.0)
    soft = [
        np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(4)))
        for f in textured(20, 96, 64, 8)
    ]
    write_clip(raw / "blurry.mp4", soft, 24.0)
    bars = [np.pad(f, ((16, 16), (0, 0), (0, 0))) for f in textured(20, 128, 64, 9)]
    write_clip(raw / "bars.mp4", bars, 24.0)
    red = [
        np.clip(f // 3 + np.array([150, 0, 0]), 0, 255).astype(np.uint8)
        for f in textured(40, 96, 64, 10)
    ]
    write_clip(raw / "two_scenes.mp4", textured(40, 96, 64, 12) + red, 24.0)
    write_clip(
        raw / "fade_in.mp4", [np.zeros((64, 96, 3), np.uint8)] * 17 + textured(17, 96, 64, 13), 24.0
    )
    write_clip(raw / "tiny.mp4", textured(20, 32, 32, 14), 24.0)
    write_clip(raw / "short.mp4", textured(5, 64, 64, 15), 24.0)
    Image.fromarray(textured(1, 128, 128, 16)[0]).save(raw / "still.png")
    leaked = textured(20, 96, 64, 17)
    write_clip(ref / "held_out.mp4", leaked, 24.0)
    write_clip(raw / "leaked.mp4", leaked, 24.0, crf=30)
    return raw, ref


def _write_8k(path: Path) -> None:
    """7680x4320 at 2 fps: three frames of big grey cells, written as yuv420p (no RGB pass)."""
    with av.open(str(path), "w", format="mp4") as c:
        opts = {"preset": "ultrafast", "tune": "zerolatency"}
        stream = c.add_stream("libx264", rate=2, options=opts)
        stream.width, stream.height, stream.pix_fmt = 7680, 4320, "yuv420p"
        for i in range(3):
            cells = np.random.default_rng(i).integers(0, 255, (54, 96), dtype=np.uint8)
            planes = np.full((4320 * 3 // 2, 7680), 128, np.uint8)
            planes[:4320] = np.repeat(np.repeat(cells, 80, 0), 80, 1)
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = i
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as c:
        stream = c.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 16000), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = 16000, 0
        c.mux(stream.encode(frame))
        c.mux(stream.encode(None))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("inputs")
    raw, _ = build_raw(root)
    cfg = CurationConfig.model_validate(yaml.safe_load(DEFAULT.read_text()))
    out = root / "dataset" / "curated"
    summary = curate(raw, out, CARD, cfg, RULES)  # reference/ beside raw/ is found by default
    rows = read_jsonl(out / "manifest.jsonl")
    dropped = read_jsonl(out / "quarantine.jsonl")
    files = {q["source"]: q for q in dropped if q["level"] == "file"}
    return {"raw": raw, "out": out, "summary": summary, "rows": rows, "files": files,
            "segments": [q for q in dropped if q["level"] == "segment"]}  # fmt: skip


def rows_of(run: dict, source: str) -> list[dict]:
    return sorted((r for r in run["rows"] if r["source"] == source), key=lambda r: r["start_s"])


def frames_of(run: dict, row: dict) -> list[np.ndarray]:
    with av.open(str(run["out"] / row["path"])) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# --- accounting ------------------------------------------------------------------------------


def test_every_input_is_in_exactly_one_place(run: dict) -> None:
    inputs = {p.relative_to(run["raw"]).as_posix() for p in list_inputs(run["raw"])}
    curated = {r["source"] for r in run["rows"]}
    assert curated | set(run["files"]) == inputs and not curated & set(run["files"])
    assert len(inputs) == run["summary"]["inputs"] == 26  # the caption sidecar is not an input
    assert run["summary"]["sources_curated"] == len(curated)
    assert sum(run["summary"]["quarantined"].values()) == len(run["files"])
    assert all("\n" not in q["detail"] and q["detail"] for q in run["files"].values())
    assert "quarantined files" in format_summary(run["summary"])


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("empty.mp4", "empty_file"),
        ("cut.mp4", "truncated"),
        ("no_index.mp4", "undecodable"),
        ("readme.mp4", "undecodable"),
        ("audio_only.mp4", "no_video_stream"),
        ("voice.wav", "unsupported_type"),
        ("outside.mp4", "symlink_outside"),
        ("inside_link.mp4", "duplicate"),
        ("tex_again.mp4", "duplicate"),
        ("tex.mp4", "near_duplicate"),  # the larger re-encode is the copy kept
        ("black.mp4", "black"),
        ("frozen.mp4", "frozen"),
        ("blurry.mp4", "blurry"),
        ("tiny.mp4", "too_small"),
        ("short.mp4", "too_short"),
        ("leaked.mp4", "leakage"),
    ],
)
def test_quarantine_reason(run: dict, source: str, reason: str) -> None:
    assert run["files"][source]["reason"] == reason, run["files"][source]


def test_refused_link_is_never_read(run: dict) -> None:
    q = run["files"]["outside.mp4"]
    assert q["source_sha256"] is None and "elsewhere.mp4" in q["detail"]


def test_duplicates_name_what_they_duplicate(run: dict) -> None:
    assert run["files"]["tex_again.mp4"]["detail"] == "same bytes as tex.mp4"
    assert "nested/tex_reencoded.mp4" in run["files"]["tex.mp4"]["detail"]
    assert run["files"]["tex_again.mp4"]["source_sha256"] == sha256_file(run["raw"] / "tex.mp4")


# --- curated oddities ------------------------------------------------------------------------


def test_8k_clip_is_curated_small(run: dict) -> None:
    rows = rows_of(run, "8k.mp4")
    assert len(rows) == 2 and rows[0]["source_size"] == [7680, 4320]
    assert rows[0]["bucket"] == [96, 64, 17] and rows[0]["discarded"]["resolution"] > 0.99
    assert frames_of(run, rows[0])[0].shape == (64, 96, 3)


def test_rotated_phone_clip_is_portrait(run: dict) -> None:
    (row,) = rows_of(run, "phone.mp4")
    assert row["source_rotation"] == 90 and row["source_size"] == [64, 128]
    assert row["bucket"] == [64, 96, 17]


def test_variable_frame_rate_is_resampled_by_time(run: dict) -> None:
    row = rows_of(run, "vfr.mp4")[0]
    assert row["source_vfr"] is True
    shown = [round((f[52:60].mean() - 20) / 5) for f in frames_of(run, row)]
    # slot i (at i/24 s) shows the last source frame whose time is <= i/24 s
    expected = [
        max(k for k, p in enumerate(VFR_PTS) if p <= i * 1000 / 24 + 1e-6) for i in range(17)
    ]
    assert shown == expected


def test_no_audio_and_non_ascii_names(run: dict) -> None:
    (silent,) = rows_of(run, "silent.mp4")
    assert silent["has_audio"] is False and silent["audio_sample_rate"] is None
    (named,) = rows_of(run, NON_ASCII)
    assert named["has_audio"] and named["audio_sample_rate"] == 16000
    with av.open(str(run["out"] / named["path"])) as c:
        assert c.streams.audio[0].codec_context.sample_rate == 16000


def test_letterbox_bars_are_cropped(run: dict) -> None:
    (row,) = rows_of(run, "bars.mp4")
    assert row["letterboxed"] and row["discarded"]["letterbox"] == pytest.approx(0.333, abs=0.01)
    first = frames_of(run, row)[0]
    assert first[:3].mean() > 40 and first[-3:].mean() > 40  # no black rows left


def test_scenes_split_and_never_straddle_a_cut(run: dict) -> None:
    rows = rows_of(run, "two_scenes.mp4")
    assert [r["scene"] for r in rows] == [0, 0, 1, 1]
    cut = 40 / 24
    assert all(r["end_s"] <= cut + 1e-6 or r["start_s"] >= cut - 1e-6 for r in rows)
    assert rows[2]["start_s"] == pytest.approx(cut, abs=1e-4)


def test_black_segment_dropped_rest_kept(run: dict) -> None:
    (row,) = rows_of(run, "fade_in.mp4")
    assert row["start_s"] == pytest.approx(17 / 24, abs=1e-4)
    (seg,) = [q for q in run["segments"] if q["source"] == "fade_in.mp4"]
    assert seg["reason"] == "black" and seg["start_s"] == 0.0
    assert "fade_in.mp4" not in run["files"]


def test_still_is_a_one_frame_clip(run: dict) -> None:
    (row,) = rows_of(run, "still.png")
    assert row["still"] and row["bucket"] == [64, 64, 1] and row["frames"] == 1
    assert len(frames_of(run, row)) == 1


def test_manifest_loads_as_a_hugging_face_dataset(run: dict, tmp_path: Path) -> None:
    from datasets import Dataset

    ds = Dataset.from_json(str(run["out"] / "manifest.jsonl"), cache_dir=str(tmp_path))
    assert len(ds) == len(run["rows"]) and {"id", "path", "bucket", "split"} <= set(ds.column_names)
    assert ds.filter(lambda r: r["source"] == "two_scenes.mp4").num_rows == 4


def test_report_is_written(run: dict) -> None:
    html = (run["out"] / "report.html").read_text(encoding="utf-8")
    assert "readme.mp4" in html and "clip é 日本 1.mp4" in html
    assert json.dumps(run["summary"]["quarantined"])  # JSON-able summary
