"""A folder of mixed containers and codecs, as a brand team's footage arrives: every intact
file is curated, with its sound, and nothing is quarantined (issue 17's "done when")."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from curation.card import DatasetCard
from curation.config import CurationConfig
from curation.curate import curate
from ltx.buckets import BucketRules
from stagekit.files import read_jsonl
from tests.unit.mixed_media import MIXED, SUFFIX, write_mixed

DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "curation" / "default.yaml"
CARD = DatasetCard(
    client="acme", adapter="mascot", trigger="zorblat", class_noun="mascot", owner="t", rights="t"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("mixed")
    raw = root / "raw"
    raw.mkdir()
    names = []
    for seed, (vcodec, fmt, acodec, pix) in enumerate(MIXED):
        name = f"{vcodec}_{acodec}.{SUFFIX.get(fmt, fmt)}"
        write_mixed(raw / name, vcodec, fmt, acodec, pix, frames=40, size=(96, 64), seed=seed)
        names.append(name)
    tree = {**yaml.safe_load(DEFAULT.read_text()), "workers": 1, "validation_fraction": 0.0}
    # Scrolling cells are flat-shaded: the blur filter is not under test here.
    cfg = CurationConfig.model_validate({**tree, "filters": {"blur_sharpness": 0}})
    summary = curate(raw, root / "out", CARD, cfg, BucketRules(spatial=32, temporal=8))
    return {
        "names": names,
        "out": root / "out",
        "summary": summary,
        "rows": read_jsonl(root / "out" / "manifest.jsonl"),
        "dropped": read_jsonl(root / "out" / "quarantine.jsonl"),
        "cfg": cfg,
    }


def test_every_file_is_curated_and_nothing_dropped(run: dict) -> None:
    assert run["dropped"] == []
    assert run["summary"]["inputs"] == len(MIXED) == run["summary"]["sources_curated"]
    per_source = {name: 0 for name in run["names"]}
    for row in run["rows"]:
        per_source[row["source"]] += 1
    # 40 frames at 25 fps is 1.6 s: two clips of 17 frames at 24 fps (0.71 s) from each file.
    assert per_source == {name: 2 for name in run["names"]}


@pytest.mark.parametrize("index", range(len(MIXED)))
def test_each_clip_keeps_its_sound_and_picture(run: dict, index: int) -> None:
    name = run["names"][index]
    cfg = run["cfg"]
    for row in (r for r in run["rows"] if r["source"] == name):
        assert row["has_audio"] and not row.get("repairs")
        with av.open(str(run["out"] / row["path"])) as c:
            pictures = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        with av.open(str(run["out"] / row["path"])) as c:
            sound = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
        assert len(pictures) == cfg.frames
        assert pictures[0].shape[:2] == (row["height"], row["width"])
        # The cells scroll: the clip moves and is not a black or frozen picture.
        assert 40 < float(np.mean(pictures[0])) < 215
        assert float(np.abs(pictures[-1].astype(int) - pictures[0]).mean()) > 10
        # The 440 Hz tone at its level, through each file's audio codec.
        expected = round(cfg.frames / cfg.fps * cfg.audio_sample_rate)
        assert abs(sound.shape[1] - expected) <= 1024  # the AAC coder's own frame
        rms = float(np.sqrt(np.mean(sound[:, 2000:-2000] ** 2)))
        assert 0.15 < rms < 0.25  # a 0.3-amplitude sine has an RMS of 0.21
