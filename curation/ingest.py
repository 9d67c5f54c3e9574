"""Which files under `raw/` are inputs, and what each is before anything decodes it."""

from __future__ import annotations

import os
from pathlib import Path

from stagekit.errors import UserError

# MPEG program and transport streams too (camcorder .mts/.m2ts, DVD .vob, broadcast .ts)
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".m4v"}
    | {".ts", ".mts", ".m2ts", ".vob"}
)
STILL_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
SIDECAR_SUFFIXES = frozenset({".txt", ".json"})


def list_inputs(raw_dir: Path) -> list[Path]:
    """Every file or link under `raw_dir` except hidden ones and caption sidecars, sorted.

    Links are listed, not followed: `classify` refuses one that leaves the folder.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise UserError(f"no clips in {raw_dir}: the folder does not exist; put video files there")
    files: list[Path] = []
    for root, dirs, names in os.walk(raw_dir):  # os.walk never descends into linked folders
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in names if not n.startswith(".")]
        files += [Path(root) / d for d in dirs if (Path(root) / d).is_symlink()]
    files.sort()
    media_stems = {p.with_suffix("") for p in files if p.suffix.lower() not in SIDECAR_SUFFIXES}
    inputs = [p for p in files if not is_sidecar(p, media_stems)]
    if not inputs:
        raise UserError(f"no clips in {raw_dir}: put video files there (mp4, mov, mkv, webm, avi)")
    return inputs


def is_sidecar(path: Path, media_stems: set[Path]) -> bool:
    """`clip.txt` / `clip.json` beside `clip.<ext>` holds that clip's caption."""
    return path.suffix.lower() in SIDECAR_SUFFIXES and path.with_suffix("") in media_stems


def classify(path: Path, raw_dir: Path) -> tuple[str, str]:
    """(kind, detail): kind is video, still, or a reason code the file is refused with."""
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not target.is_relative_to(Path(os.path.realpath(raw_dir))):
            return "symlink_outside", f"links to {target}, outside the dataset's raw folder"
        if not target.exists():
            return "broken_link", f"links to {target}, which does not exist"
    if path.is_dir():
        return "unsupported_type", "a linked folder: put the files themselves under raw/"
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES | STILL_SUFFIXES:
        known = ", ".join(sorted(VIDEO_SUFFIXES | STILL_SUFFIXES))
        return "unsupported_type", f"'{suffix or path.name}' is not a video or still ({known})"
    if path.stat().st_size == 0:
        return "empty_file", "the file is empty (0 bytes): an interrupted copy?"
    return ("still" if suffix in STILL_SUFFIXES else "video"), ""
