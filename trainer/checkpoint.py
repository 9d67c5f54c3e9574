"""Checkpoints for exact resume: everything that decides the next step, saved atomically and
durably (fsynced), without pickle.

Layout: `<root>/<run fingerprint[:16]>/run.json` (the settings, to name differences) and
`step-NNNNNN/` holding `tensors.safetensors` (every tensor of the state), `state.json` (the
rest, pointing at those tensors: trainer.checkpoint_state) and `state.sha256` (both files'
digests, `sha256sum -c` format); a run that finished has a `complete` marker. Only the last K
are kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from stagekit.errors import UserError
from stagekit.files import atomic_dir, read_json, write_json, write_text
from stagekit.hashing import sha256_file
from trainer.checkpoint_state import decode, encode

COMPLETE = "complete"
STATE, TENSORS, DIGEST = "state.json", "tensors.safetensors", "state.sha256"
FORMAT = "ltx-lora-checkpoint/2"  # 1 was a torch.save pickle, `state.pt`
LEGACY = "state.pt"


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
    """Write `step-NNNNNN/` atomically (the tensors, the JSON and their sha256), then drop all
    but the newest `keep`."""
    dest = run / f"step-{step:06d}"
    tree, tensors = encode(state)
    with atomic_dir(dest) as tmp:
        save_file(tensors, tmp / TENSORS)
        (tmp / STATE).write_text(json.dumps({"format": FORMAT, "state": tree}) + "\n")
        digests = "".join(f"{sha256_file(tmp / n)}  {n}\n" for n in (TENSORS, STATE))
        (tmp / DIGEST).write_text(digests)
    for old in checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def checkpoints(run: Path) -> list[Path]:
    """Checkpoints, oldest first (an interrupted write leaves only a hidden temp). Earlier
    versions' pickles are listed too, so resume can name them."""
    found = Path(run).glob("step-*")
    return sorted(p for p in found if (p / STATE).is_file() or (p / LEGACY).is_file())


def load_latest(run: Path) -> dict[str, Any] | None:
    """The newest intact checkpoint's state (None: there is none yet). A damaged one (cut
    short, a changed byte: its sha256 no longer matches) is passed over for the one before,
    saying which and why; when every one is damaged, a UserError names them."""
    damaged = []
    for found in reversed(checkpoints(run)):
        _refuse_pickle(found)
        try:
            state = load(found)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
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


def _refuse_pickle(step_dir: Path) -> None:
    """Earlier versions wrote `state.pt` pickles. They are refused, not read: even
    `torch.load(weights_only=True)` runs an unpickler over the file, and keeping a reader for
    them would keep pickle in the product for good; only a run killed under an earlier
    version loses its progress, and this says how to go on."""
    if (step_dir / LEGACY).is_file() and not (step_dir / STATE).is_file():
        raise UserError(
            f"checkpoint {step_dir} is an earlier version's pickle (state.pt), which this "
            f"version does not load: delete {step_dir.parent} or pass trainer.resume=false to "
            "start this run over"
        )


def load(step_dir: Path) -> dict[str, Any]:
    """One checkpoint's state, after both files match the digests written beside them."""
    listed = {}
    for line in _lines(step_dir / DIGEST):
        digest, _, name = line.partition("  ")
        listed[name] = digest
    for name in (TENSORS, STATE):
        if name not in listed:
            raise ValueError(f"{DIGEST} lists no digest for {name}")
        if sha256_file(step_dir / name) != listed[name]:
            raise ValueError(f"{name} does not match the sha256 written beside it")
    saved = json.loads((step_dir / STATE).read_text(encoding="utf-8"))
    if saved.get("format") != FORMAT:
        raise ValueError(f"unknown checkpoint format {saved.get('format')!r}")
    return decode(saved["state"], load_file(step_dir / TENSORS))


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def mark_complete(run: Path) -> None:
    write_text(Path(run) / COMPLETE, "")  # durable: a lost marker would block other runs


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
