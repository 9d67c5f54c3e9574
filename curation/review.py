"""The caption review sheet: export captions to CSV, let a person edit them, import the edits.

Imported edits live in `datasets/<name>/captions.reviewed.csv` (beside `raw/`, tracked with
the dataset); `caption` applies them before any backend, so they survive every re-run. An edit
follows its clip by id, or by source bytes + start time when re-curation renamed the clip.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from stagekit.errors import UserError
from stagekit.files import atomic_path, read_jsonl

REVIEWED_NAME = "captions.reviewed.csv"
SHEET_COLUMNS = ("id", "source", "start_s", "end_s", "caption_source", "checks", "caption")
REVIEWED_COLUMNS = ("id", "source_sha256", "start_s", "caption")


def reviewed_path(raw_dir: Path) -> Path:
    """Where imported edits are kept for the dataset whose clips are in `raw_dir`."""
    return Path(raw_dir).parent / REVIEWED_NAME


def export_review_sheet(captioned_dir: Path, dest: Path) -> int:
    """Write every captioned clip to a CSV a spreadsheet opens (UTF-8 with BOM); rows written."""
    rows = read_jsonl(Path(captioned_dir) / "manifest.jsonl")
    checks_file = Path(captioned_dir) / "checks.jsonl"
    failed: dict[str, list[str]] = {}
    for c in read_jsonl(checks_file) if checks_file.is_file() else []:
        failed.setdefault(c["id"], []).append(c["check"])
    with atomic_path(Path(dest)) as tmp, tmp.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SHEET_COLUMNS)
        for r in rows:
            checks = " ".join(failed.get(r["id"], []))
            writer.writerow(
                [r["id"], r["source"], r["start_s"], r["end_s"], r["caption_source"], checks,
                 r["caption"]]
            )  # fmt: skip
    return len(rows)


def import_review_sheet(sheet: Path, captioned_dir: Path, raw_dir: Path) -> dict[str, int]:
    """Keep every caption the person changed in the sheet; earlier edits of other clips stay.

    Returns {"edited": changed now, "kept": edits on file in all}. Unknown clip ids are an error.
    """
    current = {r["id"]: r for r in read_jsonl(Path(captioned_dir) / "manifest.jsonl")}
    edits = {}
    for line, row in _read_sheet(Path(sheet)):
        cid = row["id"].strip()
        if cid not in current:
            raise UserError(
                f"{sheet} line {line}: no curated clip has id '{cid}': export a fresh sheet"
            )
        text = " ".join(row["caption"].split())
        if text != current[cid]["caption"]:
            clip = current[cid]
            edits[cid] = {
                "id": cid,
                "source_sha256": clip["source_sha256"],
                "start_s": clip["start_s"],
                "caption": text,
            }
    path = reviewed_path(raw_dir)
    merged = {r["id"]: r for r in _read_reviewed(path)} | edits
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=REVIEWED_COLUMNS)
        writer.writeheader()
        writer.writerows(merged[k] for k in sorted(merged))
    return {"edited": len(edits), "kept": len(merged)}


def load_reviewed(path: Path) -> dict[str, Any]:
    """Edits on file, indexed by id and by (source sha256, start) for `reviewed_caption`."""
    rows = _read_reviewed(path)
    return {
        "by_id": {r["id"]: r["caption"] for r in rows},
        "by_span": {f"{r['source_sha256']}@{float(r['start_s']):.3f}": r["caption"] for r in rows},
    }


def reviewed_caption(reviewed: dict[str, Any], cid: str, sha: str, start_s: float) -> str | None:
    """The person's caption for a clip, if they wrote one."""
    if not reviewed:
        return None
    by_id = reviewed["by_id"].get(cid)
    return by_id if by_id is not None else reviewed["by_span"].get(f"{sha}@{start_s:.3f}")


def _read_sheet(path: Path) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise UserError(f"{path} does not exist: export a sheet first (caption --export-sheet)")
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"id", "caption"} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{path}: the sheet lost its {sorted(missing)[0]!r} column: re-export")
        return [(i + 2, row) for i, row in enumerate(reader)]


def _read_reviewed(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
