"""Stage records: a stage skips its work when its recorded fingerprint matches the inputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from stagekit.files import read_json, write_json

RECORD_NAME = "stage.json"


def load_record(out_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The stage's last summary if it finished with this fingerprint, else None."""
    path = Path(out_dir) / RECORD_NAME
    if not path.is_file():
        return None
    record = read_json(path)
    return record if record.get("fingerprint") == fingerprint else None


def save_record(out_dir: Path, stage: str, fingerprint: str, summary: dict[str, Any]) -> dict:
    """Written last, so a stage killed half-way has no record and runs again."""
    record = {"stage": stage, "fingerprint": fingerprint, "finished_at": time.time(), **summary}
    write_json(Path(out_dir) / RECORD_NAME, record)
    return record
