"""Checkpoints for exact resume: everything that decides the next step, saved atomically.

Layout: `<root>/<run fingerprint[:16]>/run.json` (the settings, to name differences) and
`step-NNNNNN/state.pt`; a run that finished has a `complete` marker. Only the last K are kept.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from stagekit.errors import UserError
from stagekit.files import atomic_dir, read_json, write_json

COMPLETE = "complete"


def run_dir(root: Path, fingerprint: str) -> Path:
    return Path(root) / fingerprint[:16]


def prepare_run(root: Path, fingerprint: str, settings: dict[str, Any], resume: bool) -> Path:
    """The run's folder. An unfinished run under other settings is refused (naming what
    differs) unless `resume` is false, which discards it."""
    root = Path(root)
    mine = run_dir(root, fingerprint)
    for other in _unfinished(root):
        if other == mine:
            continue
        if resume and not checkpoints(other):
            continue  # stopped before its first checkpoint: nothing to resume, no reason to block
        if resume:
            diff = _differences(read_json(other / "run.json")["settings"], settings)
            raise UserError(
                f"an unfinished training run in {other} used other settings ({diff}): re-run "
                "with its settings to resume it, or pass trainer.resume=false to discard it"
            )
        shutil.rmtree(other)
    if not resume:
        shutil.rmtree(mine, ignore_errors=True)
    mine.mkdir(parents=True, exist_ok=True)
    if not (mine / "run.json").is_file():
        write_json(mine / "run.json", {"fingerprint": fingerprint, "settings": settings})
    return mine


def save(run: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `step-NNNNNN/` atomically, then drop all but the newest `keep`."""
    dest = run / f"step-{step:06d}"
    with atomic_dir(dest) as tmp:
        torch.save(state, tmp / "state.pt")
    for old in checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def checkpoints(run: Path) -> list[Path]:
    """Complete checkpoints, oldest first (an interrupted write leaves only a hidden temp)."""
    return sorted(p for p in Path(run).glob("step-*") if (p / "state.pt").is_file())


def load_latest(run: Path) -> dict[str, Any] | None:
    found = checkpoints(run)
    return torch.load(found[-1] / "state.pt", weights_only=True) if found else None


def mark_complete(run: Path) -> None:
    (Path(run) / COMPLETE).touch()


def _unfinished(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.glob("*")
        if p.is_dir() and (p / "run.json").is_file() and not (p / COMPLETE).exists()
    )


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str:
    """'trainer.lr: 0.001 -> 0.0005, ...' over nested dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = _differences(a, b, f"{prefix}{key}.")
            out += [inner] if inner else []
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return ", ".join(out)
