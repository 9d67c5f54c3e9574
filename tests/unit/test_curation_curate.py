"""curate on real generated clips: exactly-once accounting, bucket shapes, splits, skipping."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from curation.card import DatasetCard, load_card
from curation.config import CurationConfig
from curation.curate import curate, format_summary
from curation.media import write_clip
from curation.sample import RAW_CLIPS, generate_sample_dataset
from curation.split import split_dataset
from ltx.buckets import BucketRules
from stagekit.errors import UserError
from stagekit.files import read_jsonl
from stagekit.hashing import sha256_file

RULES = BucketRules(spatial=32, temporal=8)
DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "curation" / "default.yaml"
CARD = DatasetCard(
    client="acme", adapter="mascot", trigger="zorblat", class_noun="mascot", owner="t", rights="t"
)


# Flat synthetic frames are featureless (blurry), static (frozen) and jump across colour bins
# (cuts): tests about other things switch those filters off.
PERMISSIVE = {"filters": {"blur_sharpness": 0, "frozen_motion": 0}, "scenes": {"detect": False}}


def default_cfg(**changes: object) -> CurationConfig:
    """The shipped config, in-process (workers=1: a pool costs more than these clips)."""
    tree = {**yaml.safe_load(DEFAULT.read_text()), "workers": 1}
    return CurationConfig.model_validate({**tree, **changes})


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """The sample dataset curated once with the shipped config: (raw, out, summary)."""
    root = tmp_path_factory.mktemp("ws")
    generate_sample_dataset(root / "sample")
    raw, out = root / "sample" / "raw", root / "curated"
    cfg = default_cfg(workers=2)  # the shipped setting: datasets.map in worker processes
    summary = curate(raw, out, load_card(root / "sample" / "dataset.yaml"), cfg, RULES)
    return raw, out, summary


def decode(path: Path) -> tuple[list[np.ndarray], av.audio.stream.AudioStream | None, int]:
    """Frames `[H, W, 3]`, the audio stream (or None) and its decoded sample count."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return frames, None, 0
        stream = c.streams.audio[0]
        return frames, stream, sum(f.samples for f in c.decode(stream))


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, sha256_file(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# --- the sample dataset ----------------------------------------------------------------------


def test_every_input_lands_exactly_once(sample_run) -> None:
    raw, out, summary = sample_run
    inputs = {p.name for p in raw.glob("*.mp4")}
    curated = {r["source"] for r in read_jsonl(out / "manifest.jsonl")}
    dropped = {q["source"]: q for q in read_jsonl(out / "quarantine.jsonl")}
    assert curated | set(dropped) == inputs and not curated & set(dropped)
    assert {s: q["reason"] for s, q in dropped.items()} == {"mascot_09_blink.mp4": "too_short"}
    assert dropped["mascot_09_blink.mp4"]["source_sha256"] == sha256_file(
        raw / "mascot_09_blink.mp4"
    )
    assert summary == {
        "inputs": 9,
        "sources_curated": 8,
        "curated": 16,  # every 1.5-2 s source gives two 17-frame clips
        "reused": 0,
        "splits": {"train": 12, "validation": 4},
        "quarantined": {"too_short": 1},
        "segments_dropped": {},
        "split": {
            "target": 0.2,
            "clips_share": 0.25,  # two whole sources of eight: the closest whole sources get
            "duration_share": 0.25,
            "margin_clips": 0.0625,  # one clip of 16 is more than the 5-point margin
            "margin_duration": 0.0625,
            "split_sources": [],
            "guard_dropped": 0,
            "warning": None,
        },
        "skipped": False,
    }


def test_clips_have_the_bucket_shape_and_audio(sample_run) -> None:
    raw, out, _ = sample_run
    for row in read_jsonl(out / "manifest.jsonl"):
        assert row["schema"] == 2 and row["path"] == f"clips/{row['id']}.mp4"
        assert row["source_sha256"] == sha256_file(raw / row["source"])
        frames, audio, samples = decode(out / row["path"])
        w, h, n = row["bucket"]
        assert (row["width"], row["height"], row["frames"]) == (w, h, n) == (w, h, 17)
        assert len(frames) == 17 and all(f.shape == (h, w, 3) for f in frames)
        assert row["has_audio"] and audio is not None
        assert (audio.codec_context.sample_rate, audio.codec_context.channels) == (16000, 2)
        assert samples >= round(17 / 24 * 16000)  # AAC pads to whole 1024-sample frames
        assert row["start_s"] in (0.0, round(17 / 24, 6)) and row["fps"] == 24.0
        assert row["end_s"] == pytest.approx(row["start_s"] + 17 / 24, abs=1e-5)
        assert row["codec"] == "h264" and row["audio_sample_rate"] == 16000


def test_bucket_choice_and_what_it_discarded(sample_run) -> None:
    _, out, _ = sample_run
    rows = {r["source"]: r for r in read_jsonl(out / "manifest.jsonl")}
    expected = {(128, 96): [96, 64], (96, 128): [64, 96], (112, 112): [64, 64], (160, 90): [96, 64]}
    for spec in RAW_CLIPS[:-1]:
        row = rows[f"{spec.name}.mp4"]
        assert row["bucket"][:2] == expected[(spec.width, spec.height)]
        kept = 2 * 17 / 24  # two clips
        assert row["frames_dropped_fraction"] == pytest.approx(1 - kept / spec.seconds, abs=1e-3)
        assert row["discarded"]["time"] == row["frames_dropped_fraction"]
        assert row["discarded"]["fps"] == 0.0  # 24 fps sources at 24 fps
    assert rows["mascot_03_circle.mp4"]["crop_fraction"] == 0.0
    assert rows["mascot_03_circle.mp4"]["discarded"]["resolution"] == pytest.approx(
        1 - 64 * 64 / 112**2, abs=1e-3
    )
    assert rows["mascot_01_bounce.mp4"]["crop_fraction"] == pytest.approx(1 / 9, abs=1e-3)
    # mascot_04's grey background has black bars: cropped away before the aspect crop
    zigzag = rows["mascot_04_zigzag.mp4"]
    assert zigzag["letterboxed"] and zigzag["discarded"]["letterbox"] > 0.1
    assert zigzag["crop_fraction"] == pytest.approx(
        zigzag["discarded"]["letterbox"] + zigzag["discarded"]["aspect_crop"], abs=2e-4
    )


def test_audio_keeps_its_pitch(sample_run) -> None:
    _, out, _ = sample_run
    row = next(r for r in read_jsonl(out / "manifest.jsonl") if r["source"].startswith("mascot_01"))
    with av.open(str(out / row["path"])) as c:
        wave = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    spectrum = np.abs(np.fft.rfft(wave))
    peak_hz = np.argmax(spectrum) * 16000 / len(wave)
    assert peak_hz == pytest.approx(220.0, abs=3.0)  # mascot_01's tone, resampled 48k -> 16k


def test_splits_never_share_a_source(sample_run) -> None:
    _, out, _ = sample_run
    rows = read_jsonl(out / "manifest.jsonl")
    train = {r["source"] for r in rows if r["split"] == "train"}
    validation = {r["source"] for r in rows if r["split"] == "validation"}
    assert train and validation and not train & validation


def clip_rows(source: str, n: int, scenes: int = 1) -> list[dict]:
    """`n` consecutive 17-frame clips of one source, spread evenly over `scenes` scenes."""
    return [
        {"source": source, "id": f"{source}{i}", "frames": 17, "fps": 24.0,
         "scene": i * scenes // n, "start_s": i * 17 / 24, "end_s": (i + 1) * 17 / 24}
        for i in range(n)
    ]  # fmt: skip


def test_split_assignment_rules() -> None:
    rows = [r for i in range(10) for r in clip_rows(f"s{i}.mp4", 3)]
    a, b = split_dataset(rows, 0.3, seed=7), split_dataset(rows, 0.3, seed=7)
    assert a == b
    by_source: dict[str, set[str]] = {}
    for r in a.rows:
        by_source.setdefault(r["source"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_source.values())  # sources stay whole when they can
    assert sum(s == {"validation"} for s in by_source.values()) == 3
    assert a.report["clips_share"] == a.report["duration_share"] == 0.3
    assert a.report["warning"] is None and not a.guarded
    assert split_dataset(rows, 0.3, seed=8).rows != a.rows
    one = split_dataset(clip_rows("only.mp4", 1), 0.9, seed=0)
    assert one.rows[0]["split"] == "train"  # a lone clip always trains
    assert "validation holds 0.0% of clips" in one.report["warning"]
    assert split_dataset(rows, 0.0, seed=0).report["clips_share"] == 0.0


def test_second_run_is_skipped_and_changes_nothing(sample_run) -> None:
    raw, out, first = sample_run
    before = snapshot(out)
    again = curate(raw, out, load_card(raw.parent / "dataset.yaml"), default_cfg(), RULES)
    assert again == {**first, "skipped": True}
    assert snapshot(out) == before


def test_changed_config_recurates(sample_run, tmp_path: Path) -> None:
    raw, out, _ = sample_run
    copy = tmp_path / "curated"
    shutil.copytree(out, copy)
    old_ids = {r["id"] for r in read_jsonl(copy / "manifest.jsonl")}
    summary = curate(
        raw, copy, load_card(raw.parent / "dataset.yaml"), default_cfg(frames=9), RULES
    )
    assert not summary["skipped"] and summary["reused"] == 0
    # 35 clips; whole sources miss the 20 % share by more than 5 points, so one source is split
    # and the guard drops the clips within 1 s after its boundary (0.375-s clips: three).
    assert summary["curated"] == 32 and summary["split"]["guard_dropped"] == 3
    assert summary["segments_dropped"] == {"split_guard": 3}
    rows = read_jsonl(copy / "manifest.jsonl")
    assert not {r["id"] for r in rows} & old_ids
    assert sorted(p.name for p in (copy / "clips").iterdir()) == sorted(
        f"{r['id']}.mp4" for r in rows
    )  # the old clips are gone with the old folder
    assert len(decode(copy / rows[0]["path"])[0]) == 9


def test_new_input_or_split_change_reuses_unchanged_clips(sample_run, tmp_path: Path) -> None:
    raw, out, _ = sample_run
    shutil.copytree(raw, tmp_path / "raw")
    shutil.copytree(out, tmp_path / "curated")
    card = load_card(raw.parent / "dataset.yaml")
    noise_clip(tmp_path / "raw" / "new.mp4", 20)
    summary = curate(tmp_path / "raw", tmp_path / "curated", card, default_cfg(), RULES)
    assert (summary["curated"], summary["reused"], summary["skipped"]) == (17, 16, False)
    cfg = default_cfg(validation_fraction=0.5, caption={"template": "{trigger}"})
    summary = curate(tmp_path / "raw", tmp_path / "curated", card, cfg, RULES)
    assert summary["reused"] == 17 and sum(summary["splits"].values()) == 17
    rows = read_jsonl(tmp_path / "curated" / "manifest.jsonl")
    assert summary["split"]["warning"] is None and not summary["split"]["split_sources"]
    share = sum(r["split"] == "validation" for r in rows) / len(rows)
    assert abs(share - 0.5) <= 1 / 17  # whole sources: within one clip of half
    caption_only = default_cfg(validation_fraction=0.5)  # caption settings are not curate's
    assert curate(tmp_path / "raw", tmp_path / "curated", card, caption_only, RULES)["skipped"]
    assert "reused" in format_summary(summary)


def test_format_summary(sample_run) -> None:
    text = format_summary(sample_run[2])
    assert "inputs" in text and "too_short" in text and "validation" in text
    assert "up to date" in format_summary({**sample_run[2], "skipped": True})


# --- user errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"buckets": [[64, 64], [60, 64]]}, "[60, 64]"), ({"frames": 16}, "frames")],
)
def test_bad_bucket_is_a_user_error(tmp_path: Path, changes: dict, named: str) -> None:
    (tmp_path / "raw").mkdir()
    write_clip(tmp_path / "raw" / "a.mp4", [np.zeros((64, 64, 3), np.uint8)] * 17, 24.0)
    with pytest.raises(UserError, match=rf"{named}.*curation\.") as err:
        curate(tmp_path / "raw", tmp_path / "out", CARD, default_cfg(**changes), RULES)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_empty_or_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    with pytest.raises(UserError, match=r"no clips in .*put video files there"):
        curate(raw, tmp_path / "out", CARD, default_cfg(), RULES)
    (raw / "sub").mkdir(parents=True)
    (raw / ".DS_Store").write_bytes(b"x")
    with pytest.raises(UserError, match=r"no clips in .*put video files there"):
        curate(raw, tmp_path / "out", CARD, default_cfg(), RULES)


# --- damaged, odd and unusual inputs ---------------------------------------------------------


def noise_clip(path: Path, n: int, fps: float = 24.0, faststart: bool = False) -> Path:
    """Random frames (large after compression), so truncating the file cuts into the window."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=opts) as c:
        stream = c.add_stream("libx264", rate=Fraction(fps), options={"g": "8"})
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(n):
            arr = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    return path


def test_damaged_and_unsupported_files_are_quarantined(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "nested").mkdir(parents=True)
    good = noise_clip(raw / "good.mp4", 24)
    shutil.copy(good, raw / "nested" / "copy_of_good.mp4")
    data = noise_clip(tmp_path / "fs.mp4", 48, faststart=True).read_bytes()
    (raw / "cut_in_window.mp4").write_bytes(data[: len(data) * 3 // 10])  # index kept, data cut
    (raw / "cut_index.mp4").write_bytes(good.read_bytes()[:2000])  # index (at the end) lost
    (raw / "garbage.mov").write_bytes(b"\x00\x01garbage" * 300)
    (raw / "photo.png").write_bytes(b"\x89PNG fake")
    (raw / "notes.csv").write_text("a,b\n")
    (raw / "good.txt").write_text("zorblat mascot")  # a sidecar, not an input
    (raw / "orphan.txt").write_text("no clip beside me")
    summary = curate(raw, tmp_path / "out", CARD, default_cfg(), RULES)
    reasons = {q["source"]: q["reason"] for q in read_jsonl(tmp_path / "out" / "quarantine.jsonl")}
    assert reasons == {
        "nested/copy_of_good.mp4": "duplicate",
        "cut_in_window.mp4": "truncated",
        "cut_index.mp4": "undecodable",
        "garbage.mov": "undecodable",
        "photo.png": "undecodable",
        "notes.csv": "unsupported_type",
        "orphan.txt": "unsupported_type",
    }
    assert [r["source"] for r in read_jsonl(tmp_path / "out" / "manifest.jsonl")] == ["good.mp4"]
    assert summary["inputs"] == 8 and summary["curated"] == 1
    assert summary["splits"] == {"train": 1, "validation": 0}


def test_source_without_audio_gets_no_audio_track(tmp_path: Path) -> None:
    noise_clip(tmp_path / "raw" / "silent.mp4", 20)
    curate(tmp_path / "raw", tmp_path / "out", CARD, default_cfg(), RULES)
    (row,) = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert row["has_audio"] is False and row["audio_sample_rate"] is None
    frames, audio, _ = decode(tmp_path / "out" / row["path"])
    assert audio is None and len(frames) == 17


def test_rotated_source_is_turned_upright(tmp_path: Path) -> None:
    """A 128x64 frame shown turned 90° CCW: a portrait clip, stored left edge at the bottom."""
    path = tmp_path / "raw" / "phone.mp4"
    path.parent.mkdir()
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = 128, 64, "yuv420p"
        stream.set_display_rotation(90)
        arr = np.zeros((64, 128, 3), np.uint8)
        arr[:, :32] = 255  # the stored frame's left quarter is white
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    curate(tmp_path / "raw", tmp_path / "out", CARD, default_cfg(**PERMISSIVE), RULES)
    (row,) = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert row["bucket"] == [64, 96, 17] and row["source_size"] == [64, 128]
    first = decode(tmp_path / "out" / row["path"])[0][0]
    assert first[-12:].mean() > 200 and first[:60].mean() < 30  # turned counter-clockwise


@pytest.mark.parametrize(("src_fps", "step"), [(12.0, 0.5), (48.0, 2.0), (24.0, 1.0)])
def test_frames_are_resampled_by_time(tmp_path: Path, src_fps: float, step: float) -> None:
    """Frame k of the source has grey level 20 + 5k; curated frame i shows source frame ⌊i·step⌋."""
    levels = [np.full((64, 64, 3), 20 + 5 * k, np.uint8) for k in range(40)]
    (tmp_path / "raw").mkdir()
    write_clip(tmp_path / "raw" / "ramp.mp4", levels, src_fps)
    curate(tmp_path / "raw", tmp_path / "out", CARD, default_cfg(**PERMISSIVE), RULES)
    rows = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    assert len(rows) == int(40 / src_fps * 24 // 17)  # the source cut into 17-frame clips
    row = min(rows, key=lambda r: r["start_s"])
    shown = [round((f.mean() - 20) / 5) for f in decode(tmp_path / "out" / row["path"])[0]]
    assert shown == [int(i * step) for i in range(17)]
    assert row["discarded"]["fps"] == pytest.approx(max(0.0, 1 - 24 / src_fps))


def test_outputs_are_reproducible(tmp_path: Path) -> None:
    noise_clip(tmp_path / "raw" / "a.mp4", 20)
    write_clip(
        tmp_path / "raw" / "b.mp4",
        [np.full((64, 128, 3), 90, np.uint8)] * 20,
        24.0,
        audio=np.zeros((1, 40000), np.float32),
        sample_rate=48000,
    )
    cfg = default_cfg(**PERMISSIVE)
    assert curate(tmp_path / "raw", tmp_path / "one", CARD, cfg, RULES)["curated"] == 2
    curate(tmp_path / "raw", tmp_path / "two", CARD, cfg, RULES)
    one = {k: v[1] for k, v in snapshot(tmp_path / "one").items() if k != "stage.json"}
    assert one == {k: v[1] for k, v in snapshot(tmp_path / "two").items() if k != "stage.json"}
