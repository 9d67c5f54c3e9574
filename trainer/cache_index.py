"""The cache's shards and index: fingerprints, planning (what is fresh, what to encode), atomic
shard writes, the per-rank journals and `index.json` (see trainer/cache.py for the protocol)."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as serialize

from ltx.config import ModelConfig
from ltx.identity import component_hash, model_hash
from stagekit.errors import UserError
from stagekit.files import atomic_path, read_json, read_jsonl, write_json
from stagekit.hashing import sha256_bytes, sha256_file, sha256_json
from trainer.config import PreprocessConfig

INDEX = "index.json"

EMPTY_PROMPT = "empty_prompt"  # index key: the "" caption's conditioning (caption dropout)

EMPTY_PROMPT_FILE = "_empty_prompt.safetensors"

# 3: text keeps only the attended tokens, and the LTX version is part of the identity. Part of
# every fingerprint, so preprocess re-encodes a format-2 cache; training still reads format 2.
CACHE_FORMAT = 3

JOURNAL_PREFIX = ".journal-rank"

# PreprocessConfig keys that change how shards are made, never what they hold: not fingerprinted.
RUNTIME_KEYS = frozenset({"frame_reader", "text_chunk"})

# Keys added after caches existed: left out at their default, so those caches stay fresh.
OMITTED_DEFAULTS = {"text_encoder_quantize": "none", "keyframes": "none", "reference_downscale": 1}


@dataclass
class Plan:
    """What rank 0 decided and every rank follows."""

    identity: dict[str, str]
    rows: dict[str, dict[str, Any]]  # clip id -> manifest row (+ clip_sha256)
    fingerprints: dict[str, str]
    kept: dict[str, dict[str, Any]]  # fresh entries, reused as they are
    todo: list[str]  # clip ids to encode, sorted
    empty_fingerprint: str = ""  # of the empty-prompt entry
    empty: dict[str, Any] | None = None  # the fresh empty-prompt entry, or None: encode it


def entry_fingerprint(
    row: dict[str, Any], identity: dict[str, str], cfg: PreprocessConfig, dtype: str = "float32"
) -> str:
    """Everything a shard's tensors depend on: model, VAE and text encoder, weights dtype, clip
    bytes, bucket, caption and the preprocess settings that change tensors."""
    settings = {
        k: v
        for k, v in cfg.model_dump().items()
        if k not in RUNTIME_KEYS and OMITTED_DEFAULTS.get(k, object()) != v
    }
    return sha256_json(
        {
            "format": CACHE_FORMAT,
            **identity,
            "dtype": dtype,
            "preprocess": settings,
            "clip_sha256": row["clip_sha256"],
            "bucket": row["bucket"],
            "caption": row["caption"],
            # the reference files' bytes, only where they are encoded (other caches keep theirs)
            **(
                {"references": row.get("references_sha256", [])} if cfg.reference == "files" else {}
            ),
        }
    )


def load_entry(cache_dir: Path, entry: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of one shard, checked against the sha256 the index recorded for it: a
    damaged file (one flipped bit included) is a UserError that says to re-run preprocess,
    which re-encodes exactly the damaged shards."""
    path = Path(cache_dir) / entry["file"]
    try:
        data = path.read_bytes()
        if "sha256" in entry and sha256_bytes(data) != entry["sha256"]:
            raise SafetensorError("its bytes do not match the sha256 recorded in index.json")
        return load_tensors(data)
    except (OSError, SafetensorError) as e:
        raise UserError(
            f"cache shard {path} is missing or damaged ({type(e).__name__}: {e}); "
            "re-run `ltx-lora preprocess` to re-encode it"
        ) from None


def make_plan(
    manifest: Path,
    curated_dir: Path,
    cache_dir: Path,
    model_path: Path,
    model_cfg: ModelConfig,
    cfg: PreprocessConfig,
) -> Plan:
    """Hash clips and model, replay the index and journals, and list what needs encoding."""
    _remove_temp_files(cache_dir)
    rows = {r["id"]: _with_clip_hash(r, curated_dir) for r in read_jsonl(manifest)}
    identity = model_identity(model_path, model_cfg.ltx_version)
    old = read_entries(cache_dir)
    prints = {i: entry_fingerprint(r, identity, cfg, model_cfg.dtype) for i, r in rows.items()}
    kept = {i: old[i] for i in sorted(rows) if _is_fresh(cache_dir, old.get(i), prints[i])}
    todo = sorted(set(rows) - set(kept))
    empty_print = empty_prompt_fingerprint(identity, model_cfg.dtype, cfg.text_encoder_quantize)
    old_empty = _current_index(cache_dir).get(EMPTY_PROMPT)
    fresh = old_empty if _is_fresh(cache_dir, old_empty, empty_print) else None
    return Plan(identity, rows, prints, kept, todo, empty_print, fresh)


def empty_prompt_fingerprint(identity: dict[str, str], dtype: str, quantize: str = "none") -> str:
    """The empty prompt's conditioning depends on the model and text encoder only (and the
    format the encoder was quantised to, where it was)."""
    made = {"format": CACHE_FORMAT, **identity, "dtype": dtype, "caption": ""}
    if quantize != "none":
        made["text_encoder_quantize"] = quantize
    return sha256_json(made)


def model_identity(model_path: Path, ltx_version: str) -> dict[str, str]:
    """What every fingerprint carries: the LTX version the cache is made for and the weights'
    hashes (cached by file size and mtime, so cheap)."""
    return {
        "ltx_version": ltx_version,
        "model": model_hash(model_path),
        "vae": component_hash(model_path, "vae"),
        "audio_vae": component_hash(model_path, "audio_vae"),
        "text_encoder": component_hash(model_path, "text_encoder"),
    }


def read_entries(cache_dir: Path) -> dict[str, dict[str, Any]]:
    """The index's entries, updated by every journal line a previous (killed) run left."""
    entries = dict(_current_index(cache_dir).get("entries", {}))
    for journal in sorted(Path(cache_dir).glob(f"{JOURNAL_PREFIX}*.jsonl")):
        entries |= _replay(journal)
    return entries


def _current_index(cache_dir: Path) -> dict[str, Any]:
    """`index.json` if it is of this cache format, else {}: an older layout is re-encoded."""
    path = Path(cache_dir) / INDEX
    index = _read_index(path) if path.is_file() else {}
    return index if index.get("format") == CACHE_FORMAT else {}


def _read_index(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except ValueError:  # unreadable: every shard is re-verified against its own header anyway
        return {}


def _replay(journal: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for line in journal.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # the line a kill cut short: its shard is simply encoded again
            continue
        out[record["id"]] = record["entry"]
    return out


def _with_clip_hash(row: dict[str, Any], curated_dir: Path) -> dict[str, Any]:
    path = Path(curated_dir) / row["path"]
    if not path.is_file():
        raise UserError(f"clip {row['id']}: {path} is missing; re-run `ltx-lora curate`")
    refs = [Path(curated_dir) / r["path"] for r in row.get("references", [])]
    for ref in refs:
        if not ref.is_file():
            raise UserError(f"clip {row['id']}: {ref} is missing; re-run `ltx-lora curate`")
    return {
        **row,
        "clip_sha256": sha256_file(path),
        "references_sha256": [sha256_file(r) for r in refs],
    }


def _is_fresh(cache_dir: Path, entry: dict[str, Any] | None, fingerprint: str) -> bool:
    """Same fingerprint and the file's bytes still match the checksum written with it."""
    if entry is None or entry.get("fingerprint") != fingerprint:
        return False
    shard = cache_dir / entry["file"]
    return shard.is_file() and sha256_file(shard) == entry["sha256"]


def _remove_temp_files(cache_dir: Path) -> None:
    # A SIGKILL skips atomic_path's cleanup; nobody else writes here while we hold the lock.
    for tmp in Path(cache_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def write_shard(
    cache_dir: Path, row: dict[str, Any], tensors: dict[str, torch.Tensor], plan: Plan
) -> dict[str, Any]:
    """Serialise once in memory (the sha256 comes from those bytes, no re-read), then write
    atomically: a failure leaves no partial file."""
    fingerprint = plan.fingerprints[row["id"]]
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sorted(tensors.items())}
    metadata = {
        "fingerprint": fingerprint,
        "clip_id": row["id"],
        "ltx_version": plan.identity["ltx_version"],
    }
    data = canonical(serialize(tensors, metadata=metadata))
    name = f"{row['id']}.safetensors"
    write_atomic(cache_dir / name, data)
    return {
        "file": name,
        "sha256": sha256_bytes(data),
        "fingerprint": fingerprint,
        "split": row["split"],
        "bucket": row["bucket"],
        "caption": row["caption"],
        "fps": row["fps"],
    }


def canonical(data: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted (same length, so tensor
    offsets stay): safetensors writes metadata in hash-map order, which differs between
    processes, and equal tensors must give equal bytes whichever rank wrote them."""
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":"))
    raw = header.encode().ljust(n)  # never longer: the original is compact JSON too
    return data[:8] + raw + data[8 + n :]


def write_atomic(path: Path, data: bytes) -> None:
    """`data` written to `path` atomically (no partial file), a disk error as one line."""
    with _disk_errors(path), atomic_path(path) as tmp:
        _write_file(tmp, data)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


class Journal:
    """Append-only JSON lines, one per finished shard; a cut-short last line is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, clip_id: str, entry: dict[str, Any]) -> None:
        line = json.dumps({"id": clip_id, "entry": entry}, sort_keys=True) + "\n"
        with _disk_errors(self.path), open(self.path, "a", encoding="utf-8") as f:
            f.write(line)


@contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    """An OSError while writing the cache (full disk, read-only mount) as one line that says
    what to do; shards already written are kept for the next run."""
    try:
        yield
    except OSError as e:
        hint = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "fix it"
        raise UserError(
            f"cannot write {path}: {e.strerror or e} (errno {e.errno}); {hint} and re-run "
            "`ltx-lora preprocess`: finished shards are kept"
        ) from None


def commit(cache_dir: Path, plan: Plan, empty: dict[str, Any] | None = None) -> int:
    """Merge the journals into `index.json`, drop the journals and any shard no entry names.
    Returns the number of entries."""
    done = read_entries(cache_dir)
    entries = dict(plan.kept)
    for clip_id in plan.todo:
        entry = done.get(clip_id)
        if entry is None or entry["fingerprint"] != plan.fingerprints[clip_id]:
            raise RuntimeError(f"clip {clip_id} was planned but no rank wrote it")
        entries[clip_id] = entry
    index = {
        "format": CACHE_FORMAT,
        "identity": plan.identity,
        "entries": dict(sorted(entries.items())),
        **({EMPTY_PROMPT: empty} if empty is not None else {}),
    }
    path = Path(cache_dir) / INDEX
    if not path.is_file() or _read_index(path) != index:
        with _disk_errors(path):
            write_json(path, index)
    for journal in Path(cache_dir).glob(f"{JOURNAL_PREFIX}*.jsonl"):
        journal.unlink()
    names = {e["file"] for e in entries.values()} | ({empty["file"]} if empty else set())
    for shard in Path(cache_dir).glob("*.safetensors"):
        if shard.name not in names:  # clips no longer in the manifest
            shard.unlink()
    return len(entries)
