"""Reference files (`clip_ref0.mp4`, `clip_ref1.png` beside `clip.mp4`) through `curate` on real
generated media: conformed to the clip's bucket, fps and frames, written beside the clip and
listed in its manifest row; a broken reference quarantines itself and its clip's source; a
`_ref` file with no clip beside it is an ordinary input."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from curation.card import DatasetCard
from curation.curate import curate
from curation.media import write_clip
from curation.references import split_inputs
from stagekit.files import read_jsonl
from stagekit.hashing import sha256_file
from tests.unit.test_curation_curate import PERMISSIVE, RULES, default_cfg

CARD = DatasetCard(
    client="acme", adapter="mascot", trigger="zorblat", class_noun="mascot", owner="t", rights="t"
)


def textured(n: int, width: int, height: int, seed: int) -> list[np.ndarray]:
    """`n` frames of a moving textured gradient (sharp enough, never frozen)."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 60, size=(height, width, 1))
    out = []
    for t in range(n):
        base = np.stack([(x * 4 + t * 9 + seed * 40) % 256, (y * 5 + t * 7) % 256, (x + y) % 256])
        out.append(np.clip(base.transpose(1, 2, 0) + noise, 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    raw = tmp_path_factory.mktemp("ds") / "raw"
    raw.mkdir()
    write_clip(raw / "a.mp4", textured(24, 96, 64, 0), 24.0)  # one 17-frame clip
    write_clip(raw / "a_ref0.mp4", textured(40, 120, 72, 1), 30.0)  # other size and rate
    Image.fromarray(textured(1, 50, 70, 2)[0]).save(raw / "a_ref1.png")  # a still, portrait
    write_clip(raw / "b.mp4", textured(24, 64, 64, 3), 24.0)
    (raw / "b_ref0.mp4").write_bytes(b"\x00\x01 not a video" * 64)  # broken
    write_clip(raw / "c.mp4", textured(24, 64, 64, 4), 24.0)
    write_clip(raw / "c_ref0.mp4", textured(12, 64, 64, 5), 24.0)  # shorter than the clip
    Image.fromarray(textured(1, 64, 64, 6)[0]).save(raw / "lonely_ref0.png")  # no `lonely.*`
    out = raw.parent / "curated"
    filters = {**PERMISSIVE["filters"], "dedupe": False}
    cfg = default_cfg(scenes=PERMISSIVE["scenes"], filters=filters, validation_fraction=0.0)
    summary = curate(raw, out, CARD, cfg, RULES)
    return raw, out, summary


def test_reference_files_are_a_clips_sheet_in_order() -> None:
    raw = Path("/r")
    inputs = [
        raw / n
        for n in ("a.mp4", "a_ref.png", "a_ref1.mp4", "a_ref10.png", "a_ref2.jpg", "x_ref0.mp4")
    ]
    clips, sheets = split_inputs(inputs, raw)
    assert [p.name for p in clips] == ["a.mp4", "x_ref0.mp4"]  # x has no clip: an input
    assert sheets == {"a.mp4": ["a_ref.png", "a_ref1.mp4", "a_ref2.jpg", "a_ref10.png"]}


def test_references_are_conformed_beside_their_clip(run) -> None:
    raw, out, _ = run
    rows = {r["source"]: r for r in read_jsonl(out / "manifest.jsonl")}
    (row,) = [r for r in rows.values() if r["source"] == "a.mp4"]
    video, still = row["references"]
    assert video["source"] == "a_ref0.mp4" and video["kind"] == "video"
    assert video["sha256"] == sha256_file(raw / "a_ref0.mp4")
    assert video["path"] == f"clips/{row['id']}_ref0.mp4" and video["frames"] == 17
    with av.open(str(out / video["path"])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        rate = c.streams.video[0].average_rate
    assert len(frames) == 17 and frames[0].shape == (64, 96, 3) and float(rate) == 24.0
    assert still["path"] == f"clips/{row['id']}_ref1.png" and still["frames"] == 1
    with Image.open(out / still["path"]) as img:
        assert img.size == (96, 64)  # the portrait still centre-cropped to the clip's bucket


def test_a_short_reference_keeps_the_longest_valid_frame_count(run) -> None:
    """12 frames at the clip's rate: the first 9 (8k+1) are kept, as the VAE encodes them."""
    _, out, _ = run
    (row,) = [r for r in read_jsonl(out / "manifest.jsonl") if r["source"] == "c.mp4"]
    assert row["references"][0]["frames"] == 9
    with av.open(str(out / row["references"][0]["path"])) as c:
        assert sum(1 for _ in c.decode(video=0)) == 9


def test_a_broken_reference_quarantines_itself_and_its_clip(run) -> None:
    _, out, summary = run
    dropped = {q["source"]: q for q in read_jsonl(out / "quarantine.jsonl")}
    assert dropped["b_ref0.mp4"]["reason"] == "undecodable"
    assert dropped["b.mp4"]["reason"] == "broken_reference"
    assert "b_ref0.mp4" in dropped["b.mp4"]["detail"]
    sources = {r["source"] for r in read_jsonl(out / "manifest.jsonl")}
    assert sources == {"a.mp4", "c.mp4", "lonely_ref0.png"}  # the lone `_ref` file: a still
    names = {p.name for p in (out / "clips").iterdir()}
    assert len(names) == 3 + 3  # three clips (b's deleted), a's two references, c's one
    assert summary["quarantined"] == {"broken_reference": 1, "undecodable": 1}
