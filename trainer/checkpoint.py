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
from stagekit.hashing import sha256_file

COMPLETE = "complete"
STATE, DIGEST = "state.pt", "state.sha256"


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
    """Write `step-NNNNNN/` atomically (the state and its sha256), then drop all but the newest
    `keep`."""
    dest = run / f"step-{step:06d}"
    with atomic_dir(dest) as tmp:
        torch.save(state, tmp / STATE)
        (tmp / DIGEST).write_text(sha256_file(tmp / STATE) + "\n")
    for old in checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def checkpoints(run: Path) -> list[Path]:
    """Complete checkpoints, oldest first (an interrupted write leaves only a hidden temp)."""
    return sorted(p for p in Path(run).glob("step-*") if (p / "state.pt").is_file())


def load_latest(run: Path) -> dict[str, Any] | None:
    """The newest intact checkpoint's state (None: there is none yet). A damaged one (cut
    short, a changed byte: its sha256 no longer matches) is passed over for the one before,
    saying which and why; when every one is damaged, a UserError names them."""
    damaged = []
    for found in reversed(checkpoints(run)):
        try:
            state = _load(found)
        except (OSError, RuntimeError, EOFError, ValueError) as e:
            damaged.append(f"{found.name} ({type(e).__name__}: {e})")
            print(f"train: checkpoint {found} is damaged ({e}); trying the one before")
            continue
        if damaged:
            print(f"train: resuming from {found.name}, the newest intact checkpoint")
        return state
    if damaged:
        raise UserError(
            f"every checkpoint in {run} is damaged: {'; '.join(damaged)}. Pass "
            "trainer.resume=false to start this run over"
        )
    return None


def _load(step_dir: Path) -> dict[str, Any]:
    digest = step_dir / DIGEST
    if digest.is_file() and sha256_file(step_dir / STATE) != digest.read_text().strip():
        raise ValueError(f"{STATE} does not match the sha256 written beside it")
    return torch.load(step_dir / STATE, weights_only=True)


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
