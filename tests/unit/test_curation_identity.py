"""The dataset hash comes from content: identical inputs re-curated elsewhere hash the same."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from curation.caption import caption
from curation.card import DatasetCard
from curation.config import CurationConfig
from curation.curate import curate
from curation.identity import dataset_hash
from curation.media import write_clip
from ltx.buckets import BucketRules
from stagekit.files import read_json
from stagekit.hashing import sha256_tree

RULES = BucketRules(spatial=32, temporal=8)
DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "curation" / "default.yaml"
CARD = DatasetCard(
    client="acme", adapter="mascot", trigger="zorblat", class_noun="mascot", owner="t", rights="t"
)


def textured(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 255, (10, 14 + n, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(cells, 8, 0), 8, 1)
    return [np.ascontiguousarray(big[:64, 2 * i : 2 * i + 96]) for i in range(n)]


def build(root: Path, raw: Path) -> Path:
    """Curate and caption `raw` inside `root`; the captioned folder."""
    cfg = CurationConfig.model_validate({**yaml.safe_load(DEFAULT.read_text()), "workers": 1})
    curate(raw, root / "curated", CARD, cfg, RULES)
    caption(root / "curated", raw, root / "captioned", CARD, cfg.caption)
    return root / "captioned"


@pytest.fixture(scope="module")
def twice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same raw clips curated and captioned in two workspaces at different paths."""
    first = tmp_path_factory.mktemp("first")
    raw = first / "raw"
    raw.mkdir()
    for i in range(3):
        write_clip(raw / f"clip{i}.mp4", textured(40, i), 24.0)
    (raw / "clip0.txt").write_text("zorblat mascot waving")
    second = tmp_path_factory.mktemp("second") / "elsewhere"
    shutil.copytree(raw, second / "raw")
    return build(first, raw), build(second, second / "raw")


def test_recurating_identical_inputs_gives_the_same_hash(twice: tuple[Path, Path]) -> None:
    a, b = twice
    stamps = [read_json(p / "stage.json")["finished_at"] for p in (a, b)]
    assert stamps[0] != stamps[1]  # the runs differ in time and place...
    assert sha256_tree(a) != sha256_tree(b)  # ...which the old folder hash counted
    assert dataset_hash(a, a.parent / "curated") == dataset_hash(b, b.parent / "curated")


def test_a_changed_caption_or_clip_changes_the_hash(twice: tuple[Path, Path], tmp_path) -> None:
    a, _ = twice
    before = dataset_hash(a, a.parent / "curated")
    copy = tmp_path / "ws"
    shutil.copytree(a.parent, copy)
    manifest = copy / "captioned" / "manifest.jsonl"
    manifest.write_text(manifest.read_text().replace("zorblat mascot waving", "zorblat dancing"))
    assert dataset_hash(copy / "captioned", copy / "curated") != before
    shutil.copy(a / "manifest.jsonl", manifest)
    assert dataset_hash(copy / "captioned", copy / "curated") == before
    clip = next((copy / "curated" / "clips").iterdir())
    clip.write_bytes(clip.read_bytes() + b"\0")
    assert dataset_hash(copy / "captioned", copy / "curated") != before
