"""caption: sidecars first, then the template; the trigger word rule; skipping like curate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from curation.caption import caption, caption_for, has_word
from curation.card import DatasetCard
from curation.config import CaptionConfig, CurationConfig
from curation.curate import curate
from curation.media import write_clip
from curation.review import REVIEWED_NAME, export_review_sheet, import_review_sheet
from ltx.buckets import BucketRules
from stagekit.errors import UserError
from stagekit.files import read_jsonl

DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "curation" / "default.yaml"
CARD = DatasetCard(
    client="acme", adapter="mascot", trigger="zorblat", class_noun="mascot", owner="t", rights="t"
)


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three real clips: a sidecar with the trigger, one without it, and none at all."""
    root = tmp_path_factory.mktemp("ws")
    raw = root / "raw"
    (raw / "sub").mkdir(parents=True)
    for i, name in enumerate(["with_trigger", "no_trigger", "sub/bare"]):
        write_clip(raw / f"{name}.mp4", textured(17, 64, 64, seed=i), 24.0)
    (raw / "with_trigger.txt").write_text("zorblat mascot waving\nat the camera\n")
    (raw / "no_trigger.txt").write_text("an orange mascot in a purple hat")
    cfg = CurationConfig.model_validate({**yaml.safe_load(DEFAULT.read_text()), "workers": 1})
    curate(raw, root / "curated", CARD, cfg, BucketRules(spatial=32, temporal=8))
    return raw, root / "curated"


def textured(n: int, w: int, h: int, seed: int) -> list[np.ndarray]:
    """Random colour cells scrolling 2 px a frame: sharp, moving, unique per seed."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 255, (h // 8 + 2, w // 8 + 2 + n, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(cells, 8, 0), 8, 1)
    return [np.ascontiguousarray(big[:h, 2 * i : 2 * i + w]) for i in range(n)]


def by_source(folder: Path) -> dict[str, dict]:
    return {r["source"]: r for r in read_jsonl(folder / "manifest.jsonl")}


def test_sidecar_template_and_trigger(curated, tmp_path: Path) -> None:
    raw, cur = curated
    summary = caption(cur, raw, tmp_path / "captioned", CARD, CaptionConfig())
    assert summary == {
        "captioned": 3,
        "from_reviewed": 0,
        "from_sidecar": 2,
        "from_vlm": 0,
        "from_template": 1,
        "checks": {},
        "skipped": False,
    }
    rows = by_source(tmp_path / "captioned")
    assert rows["with_trigger.mp4"]["caption"] == "zorblat mascot waving at the camera"
    assert rows["no_trigger.mp4"]["caption"] == "zorblat, an orange mascot in a purple hat"
    assert rows["sub/bare.mp4"]["caption"] == "zorblat mascot"
    assert [rows[s]["caption_source"] for s in sorted(rows)] == ["sidecar", "template", "sidecar"]
    for source, row in by_source(cur).items():  # every curated field is kept, path unchanged
        assert {k: rows[source][k] for k in row} == row


def test_trigger_not_required(curated, tmp_path: Path) -> None:
    raw, cur = curated
    cfg = CaptionConfig(template="a {class_noun} by {client}", require_trigger=False)
    caption(cur, raw, tmp_path / "captioned", CARD, cfg)
    rows = by_source(tmp_path / "captioned")
    assert rows["no_trigger.mp4"]["caption"] == "an orange mascot in a purple hat"
    assert rows["sub/bare.mp4"]["caption"] == "a mascot by acme"


def test_rerun_skips_and_a_changed_sidecar_recaptions(curated, tmp_path: Path) -> None:
    raw, cur = curated
    out = tmp_path / "captioned"
    caption(cur, raw, out, CARD, CaptionConfig())
    stamp = (out / "manifest.jsonl").stat().st_mtime_ns
    assert caption(cur, raw, out, CARD, CaptionConfig())["skipped"] is True
    assert (out / "manifest.jsonl").stat().st_mtime_ns == stamp
    sidecar = raw / "sub" / "bare.txt"
    try:
        sidecar.write_text("zorblat mascot alone")
        summary = caption(cur, raw, out, CARD, CaptionConfig())
    finally:
        sidecar.unlink()
    assert summary["skipped"] is False and summary["from_sidecar"] == 3
    assert by_source(out)["sub/bare.mp4"]["caption"] == "zorblat mascot alone"


def test_missing_curated_manifest_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="run `ltx-lora curate` first"):
        caption(tmp_path / "curated", tmp_path / "raw", tmp_path / "out", CARD, CaptionConfig())


def test_caption_rules() -> None:
    cfg = CaptionConfig()
    assert caption_for(None, CARD, cfg) == {
        "caption": "zorblat mascot",
        "caption_source": "template",
    }
    assert caption_for("Zorblat waves", CARD, cfg)["trigger_added"] is True
    assert caption_for("Zorblat waves", CARD, cfg)["caption"] == "zorblat, Zorblat waves"
    assert has_word("a zorblat, waving", "zorblat") and has_word("zorblat", "zorblat")
    assert not has_word("zorblats waving", "zorblat") and not has_word("xzorblat", "zorblat")


def test_empty_sidecar_falls_back_to_the_template(curated, tmp_path: Path) -> None:
    raw, cur = curated
    sidecar = raw / "sub" / "bare.txt"
    try:
        sidecar.write_text("\n  \n")
        caption(cur, raw, tmp_path / "out", CARD, CaptionConfig())
    finally:
        sidecar.unlink()
    row = by_source(tmp_path / "out")["sub/bare.mp4"]
    assert (row["caption"], row["caption_source"]) == ("zorblat mascot", "template")


def test_json_sidecar(curated, tmp_path: Path) -> None:
    raw, cur = curated
    sidecar = raw / "sub" / "bare.json"
    try:
        sidecar.write_text(json.dumps({"caption": "zorblat mascot from JSON", "tags": ["x"]}))
        caption(cur, raw, tmp_path / "out", CARD, CaptionConfig())
    finally:
        sidecar.unlink()
    row = by_source(tmp_path / "out")["sub/bare.mp4"]
    assert (row["caption"], row["caption_source"]) == ("zorblat mascot from JSON", "sidecar")


def test_checks_are_listed_not_fixed(curated, tmp_path: Path) -> None:
    raw, cur = curated
    cfg = CaptionConfig(template="a {class_noun}", require_trigger=False, min_words=3)
    (raw / "with_trigger.txt").rename(raw / "with_trigger.bak")
    try:
        summary = caption(cur, raw, tmp_path / "out", CARD, cfg)
    finally:
        (raw / "with_trigger.bak").rename(raw / "with_trigger.txt")
    checks = read_jsonl(tmp_path / "out" / "checks.jsonl")
    got = {(c["source"], c["check"]) for c in checks}
    assert got == {
        ("with_trigger.mp4", "missing_trigger"),
        ("with_trigger.mp4", "too_short"),
        ("with_trigger.mp4", "duplicate"),  # the template caption, on two sources
        ("sub/bare.mp4", "missing_trigger"),
        ("sub/bare.mp4", "too_short"),
        ("sub/bare.mp4", "duplicate"),
        ("no_trigger.mp4", "missing_trigger"),
    }
    assert summary["checks"] == {"duplicate": 2, "missing_trigger": 3, "too_short": 2}
    assert by_source(tmp_path / "out")["sub/bare.mp4"]["caption"] == "a mascot"  # not fixed
    strict = CaptionConfig(require_trigger=False, fail_on_check=True)
    with pytest.raises(UserError, match=r"caption checks failed.*missing_trigger"):
        caption(cur, raw, tmp_path / "strict", CARD, strict)
    assert not (tmp_path / "strict").exists()


def test_review_sheet_round_trip_survives_recaptioning(curated, tmp_path: Path) -> None:
    raw, cur = curated
    out, sheet = tmp_path / "captioned", tmp_path / "review.csv"
    caption(cur, raw, out, CARD, CaptionConfig())
    assert export_review_sheet(out, sheet) == 3
    with sheet.open(encoding="utf-8-sig", newline="") as f:
        lines = list(csv.DictReader(f))
    assert [line["caption_source"] for line in lines].count("template") == 1
    edited = {line["id"]: line for line in lines}
    bare = next(line for line in lines if line["source"] == "sub/bare.mp4")
    bare["caption"] = "zorblat mascot, reviewed by a person — naïve café"
    with sheet.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(edited.values())
    dataset = raw.parent
    try:
        assert import_review_sheet(sheet, out, raw) == {"edited": 1, "kept": 1}
        summary = caption(cur, raw, out, CARD, CaptionConfig())  # the edit re-runs captioning
        assert summary["from_reviewed"] == 1 and not summary["skipped"]
        assert by_source(out)["sub/bare.mp4"]["caption"] == bare["caption"]
        again = caption(cur, raw, tmp_path / "fresh", CARD, CaptionConfig(template="{trigger}"))
        assert again["from_reviewed"] == 1  # a new template never overwrites a reviewed caption
        assert by_source(tmp_path / "fresh")["sub/bare.mp4"]["caption_source"] == "reviewed"
        lines[0]["id"] = "no-such-clip"
        with sheet.open("w", encoding="utf-8-sig", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(lines[0]))
            writer.writeheader()
            writer.writerows(lines)
        with pytest.raises(UserError, match="no curated clip has id 'no-such-clip'"):
            import_review_sheet(sheet, out, raw)
    finally:
        (dataset / REVIEWED_NAME).unlink(missing_ok=True)
