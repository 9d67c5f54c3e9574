"""A dataset's identity from its content: what training sees, never when or where it was made."""

from __future__ import annotations

from pathlib import Path

from stagekit.files import read_jsonl
from stagekit.hashing import sha256_file, sha256_json

MANIFEST = "manifest.jsonl"


def dataset_hash(captioned_dir: Path, curated_dir: Path) -> str:
    """sha256 of every captioned manifest row (clip facts, provenance, caption, split) and the
    bytes of the clip it names.

    Left out on purpose: stage records (`stage.json` holds a finish time), reports, and the
    folders' locations, so re-curating identical inputs anywhere gives the same hash.
    """
    manifest = Path(captioned_dir) / MANIFEST
    rows = sorted(read_jsonl(manifest), key=lambda r: (r["id"], r["path"]))
    return sha256_json([[row, sha256_file(Path(curated_dir) / row["path"])] for row in rows])
