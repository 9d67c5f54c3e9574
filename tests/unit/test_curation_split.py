"""The split hits its share by clips and duration; a dominant source is split at a scene cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from curation.card import DatasetCard
from curation.config import CurationConfig
from curation.curate import curate, format_summary
from curation.media import write_clip
from curation.split import GUARD_S, SPLIT_MARGIN, split_dataset
from ltx.buckets import BucketRules
from stagekit.files import read_jsonl

RULES = BucketRules(spatial=32, temporal=8)
DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "curation" / "default.yaml"
CARD = DatasetCard(
    client="acme", adapter="mascot", trigger="zorblat", class_noun="mascot", owner="t", rights="t"
)
TINTS = [(150, 0, 0), (0, 150, 0), (0, 0, 150), (150, 150, 0), (0, 150, 150), (150, 0, 150),
         (150, 150, 150), (60, 60, 60)]  # fmt: skip


def textured(n: int, seed: int, w: int = 96, h: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 255, (h // 8 + 2, w // 8 + 2 + n, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(cells, 8, 0), 8, 1)
    return [np.ascontiguousarray(big[:h, 2 * i : 2 * i + w]) for i in range(n)]


def scenes(count: int, frames: int) -> list[np.ndarray]:
    """`count` shots of `frames` frames, each its own texture in its own colour cast."""
    out = []
    for k in range(count):
        tint = np.array(TINTS[k % len(TINTS)])
        out += [np.clip(f // 3 + tint, 0, 255).astype(np.uint8) for f in textured(frames, 40 + k)]
    return out


def config(**changes: object) -> CurationConfig:
    tree = {**yaml.safe_load(DEFAULT.read_text()), "workers": 1}
    return CurationConfig.model_validate({**tree, **changes})


@pytest.fixture(scope="module")
def dominant(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One 8-scene source of 16 clips beside two one-clip sources: 89% of the data is one file."""
    root = tmp_path_factory.mktemp("split")
    raw = root / "raw"
    raw.mkdir()
    write_clip(raw / "long_take.mp4", scenes(8, 34), 24.0)
    write_clip(raw / "small_a.mp4", textured(20, 1), 24.0)
    write_clip(raw / "small_b.mp4", textured(20, 2), 24.0)
    summary = curate(raw, root / "out", CARD, config(validation_fraction=0.2), RULES)
    return {"out": root / "out", "summary": summary,
            "rows": read_jsonl(root / "out" / "manifest.jsonl")}  # fmt: skip


def test_a_dominant_source_is_split_at_a_scene_cut(dominant: dict) -> None:
    rows, report = dominant["rows"], dominant["summary"]["split"]
    long_take = [r for r in rows if r["source"] == "long_take.mp4"]
    long_take.sort(key=lambda r: r["start_s"])
    assert len(rows) == 18 and len(long_take) == 16
    assert [r["scene"] for r in long_take] == [k // 2 for k in range(16)]
    assert report["split_sources"] == ["long_take.mp4"] and report["guard_dropped"] == 0
    splits = [r["split"] for r in long_take]
    assert splits == ["train"] * 14 + ["validation"] * 2  # the last scene, whole
    assert long_take[13]["scene"] != long_take[14]["scene"]  # the boundary is a cut
    small = {r["source"]: r["split"] for r in rows if r["source"] != "long_take.mp4"}
    assert small == {"small_a.mp4": "validation", "small_b.mp4": "validation"}
    assert dominant["summary"]["splits"] == {"train": 14, "validation": 4}
    assert report["clips_share"] == report["duration_share"] == round(4 / 18, 4)
    assert abs(report["clips_share"] - 0.2) <= report["margin_clips"] == pytest.approx(1 / 18, 1e-3)
    assert report["warning"] is None
    assert "split inside long_take.mp4" in format_summary(dominant["summary"])


def test_the_report_states_the_achieved_share(dominant: dict) -> None:
    page = (dominant["out"] / "report.html").read_text()
    assert 'id="split"' in page and "22.2%" in page and "long_take.mp4" in page


def test_a_lopsided_result_is_warned_about(tmp_path: Path) -> None:
    """One source, one scene, two clips: no boundary leaves a validation clip past the guard."""
    (tmp_path / "raw").mkdir()
    write_clip(tmp_path / "raw" / "only.mp4", textured(34, 3), 24.0)
    summary = curate(tmp_path / "raw", tmp_path / "out", CARD, config(), RULES)
    assert summary["splits"] == {"train": 2, "validation": 0}
    warning = summary["split"]["warning"]
    assert warning.startswith("validation holds 0.0% of clips and 0.0% of duration")
    assert "target is 20.0%" in warning
    assert f"warning: {warning}" in format_summary(summary)
    assert warning in (tmp_path / "out" / "report.html").read_text()


# --- the guard, on rows (signatures chosen, not measured) -------------------------------------


def rows_of(source: str, scenes_of: list[int], sigs: dict[int, str]) -> list[dict]:
    """Consecutive 1-s clips (24 frames at 24 fps) whose scene k shows signature sigs[k]."""
    return [
        {"source": source, "frames": 24, "fps": 24.0, "scene": k, "start_s": float(i),
         "end_s": float(i + 1), "phash": [sigs[k]] * 3}
        for i, k in enumerate(scenes_of)
    ]  # fmt: skip


def signatures(n: int) -> dict[int, str]:
    rng = np.random.default_rng(0)
    return {k: f"{int(rng.integers(0, 2**63)):016x}808080" for k in range(n)}


def test_a_scene_that_returns_never_crosses_the_split() -> None:
    """Scenes 0..8, then scene 0's shot again: the validation tail would repeat a training
    shot, so its clip is dropped by the guard, not shown on both sides."""
    sigs = signatures(9)
    sigs[9] = sigs[0]
    rows = rows_of("long.mp4", [0] * 4 + [k for k in range(1, 10) for _ in range(2)], sigs)
    rows += rows_of("short.mp4", [0], {0: signatures(20)[19]})
    split = split_dataset(rows, 0.25, seed=0)
    val = [r for r in split.rows if r["split"] == "validation" and r["source"] == "long.mp4"]
    train_sigs = {r["phash"][0] for r in split.rows if r["split"] == "train"}
    assert val and not {r["phash"][0] for r in val} & train_sigs
    assert [r["scene"] for r in split.guarded] == [9, 9]
    assert all(r["scene"] != 9 for r in split.rows if r["split"] == "validation")


def test_one_long_scene_is_split_with_a_time_gap() -> None:
    """No scene cut at all: the clips within GUARD_S after the boundary are dropped."""
    rows = rows_of("take.mp4", [0] * 20, {0: ""})
    for r, sig in zip(rows, signatures(20).values(), strict=True):
        r["phash"] = [sig] * 3  # a moving take: no two clips alike, only the time gap guards
    split = split_dataset(rows, 0.2, seed=0)
    train = [r for r in split.rows if r["split"] == "train"]
    val = [r for r in split.rows if r["split"] == "validation"]
    assert len(split.guarded) == 1 and split.guarded[0]["start_s"] == max(r["end_s"] for r in train)
    assert min(r["start_s"] for r in val) - max(r["end_s"] for r in train) >= GUARD_S
    assert abs(len(val) / len(split.rows) - 0.2) <= max(SPLIT_MARGIN, 1 / len(split.rows))
    assert split.report["warning"] is None
