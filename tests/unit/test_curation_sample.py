"""The procedural sample dataset: deterministic, complete, quick, readable by probe."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from curation.card import load_card
from curation.probe import ProbeResult, probe
from curation.sample import RAW_CLIPS, REFERENCE_CLIPS, TRIGGER, generate_sample_dataset
from stagekit.hashing import sha256_tree


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    dest = tmp_path_factory.mktemp("ws") / "sample"
    start = time.perf_counter()
    generate_sample_dataset(dest, seed=0)
    return dest, time.perf_counter() - start


def test_generation_is_quick(sample: tuple[Path, float]) -> None:
    assert sample[1] < 10.0


def test_same_seed_same_bytes_other_seed_other_bytes(sample, tmp_path: Path) -> None:
    dest, _ = sample
    generate_sample_dataset(tmp_path / "again", seed=0)
    generate_sample_dataset(tmp_path / "other", seed=1)
    assert sha256_tree(tmp_path / "again") == sha256_tree(dest)
    assert sha256_tree(tmp_path / "other") != sha256_tree(dest)


def test_contents(sample) -> None:
    dest, _ = sample
    card = load_card(dest / "dataset.yaml")
    assert (card.client, card.adapter, card.trigger, card.class_noun) == (
        "demo",
        "mascot",
        TRIGGER,
        "mascot",
    )
    assert "synthetic" in card.rights
    raw = sorted(p.name for p in (dest / "raw").iterdir())
    assert len([n for n in raw if n.endswith(".mp4")]) == len(RAW_CLIPS) == 9
    assert len([n for n in raw if n.endswith(".txt")]) == 8  # one clip has no sidecar
    ref = sorted(p.name for p in (dest / "reference").iterdir())
    assert len([n for n in ref if n.endswith(".mp4")]) == len(REFERENCE_CLIPS) == 3
    assert len([n for n in ref if n.endswith(".txt")]) == 3
    for txt in [*(dest / "raw").glob("*.txt"), *(dest / "reference").glob("*.txt")]:
        assert TRIGGER in txt.read_text().split()
    assert not {p.stem for p in (dest / "raw").glob("*.mp4")} & {
        p.stem for p in (dest / "reference").glob("*.mp4")
    }


def test_probe_reads_what_was_written(sample) -> None:
    dest, _ = sample
    infos = {spec.name: probe(dest / "raw" / f"{spec.name}.mp4") for spec in RAW_CLIPS}
    for spec in RAW_CLIPS:
        info = infos[spec.name]
        assert isinstance(info, ProbeResult)
        assert "mp4" in info.container and info.video_codec == "h264"
        assert (info.width, info.height) == (spec.width, spec.height)
        assert info.fps == pytest.approx(24.0)
        assert info.frames == round(spec.seconds * 24)
        assert info.duration_s == pytest.approx(spec.seconds, abs=1 / 24)
        assert info.rotation == 0
        assert info.has_audio and info.audio_sample_rate == 48000 and info.audio_channels == 1
    sizes = {(s.width, s.height) for s in RAW_CLIPS}
    assert {(128, 96), (96, 128), (112, 112), (160, 90)} <= sizes
    assert min(s.seconds for s in RAW_CLIPS) < 0.3  # the clip that quarantine must catch
    assert len({s.pitch_hz for s in RAW_CLIPS}) == len(RAW_CLIPS)


def test_replaces_an_existing_folder_whole(tmp_path: Path) -> None:
    dest = tmp_path / "sample"
    (dest / "raw").mkdir(parents=True)
    (dest / "raw" / "stale.mp4").write_bytes(b"old")
    generate_sample_dataset(dest)
    assert not (dest / "raw" / "stale.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sample"]  # no temp folder left behind
