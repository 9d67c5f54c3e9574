"""`ltx-lora preprocess`: latents and text embeddings cached to safetensors, never silently stale.

One shard per clip, `<clip id>.safetensors`, holding `video` [C, F', H', W'], optionally `audio`
[C, L, M'], and the caption's text compactly (`compact_text`; `text_inputs` re-pads it). Its
metadata header carries the entry's fingerprint and LTX version; `index.json` carries each
shard's sha256 so a corrupted file is detected and re-encoded.

Crash safety: each shard is written atomically and then appended, as one JSON line, to its
rank's journal (`.journal-rank<r>.jsonl`); `index.json` is rewritten once at the end from the
old index plus the journals. A kill at any point loses at most the shard in flight: the next run
replays the journals, verifies each shard against its sha256 and encodes only what is missing.

Processes: under torchrun (WORLD_SIZE > 1) rank 0 plans (hashes clips and shards), every rank
encodes `todo[rank::world]`, and rank 0 merges the journals into the index.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as serialize
from tqdm import tqdm

from ltx.config import ModelConfig
from ltx.encode import encode_audio, encode_prompts, encode_video
from ltx.frames import read_frames
from ltx.identity import component_hash, model_hash
from ltx.keyframes import keyframe_image
from ltx.loading import load_components, release, weight_bytes
from ltx.sampling import read_audio
from stagekit.errors import UserError
from stagekit.files import atomic_path, read_json, read_jsonl, write_json
from stagekit.hashing import sha256_bytes, sha256_file, sha256_json
from trainer.config import PreprocessConfig
from trainer.controls import downscaled, edge_frames
from trainer.text_encoder import load_text_parts

INDEX = "index.json"
EMPTY_PROMPT = "empty_prompt"  # index key: the "" caption's conditioning (caption dropout)
EMPTY_PROMPT_FILE = "_empty_prompt.safetensors"
# 3: text keeps only the attended tokens, and the LTX version is part of the identity. Part of
# every fingerprint, so preprocess re-encodes a format-2 cache; training still reads format 2.
CACHE_FORMAT = 3
TEXT, PAD = "text.", "text_pad."  # text.<name> [1, n, D]; text_pad.<name> [1, 1, D]
TEXT_LENGTH = "text_length"  # int64 [1]: T, the length prompts were left-padded to
MASK = "prompt_attention_mask"
# [C, 1, H, W]: the clip's first / last frame re-compressed and encoded on its own, as the
# condition pipeline prepares a keyframe image (ltx.keyframes.keyframe_image)
KEYFRAME_FIRST, KEYFRAME_LAST = "keyframe_first", "keyframe_last"
JOURNAL_PREFIX = ".journal-rank"
# PreprocessConfig keys that change how shards are made, never what they hold: not fingerprinted.
RUNTIME_KEYS = frozenset({"frame_reader", "text_chunk"})
# Keys added after caches existed: left out at their default, so those caches stay fresh.
OMITTED_DEFAULTS = {"text_encoder_quantize": "none", "keyframes": "none", "reference_downscale": 1}
# Always clips/s and the time left (tqdm's default flips to s/clip below 1 clip/s).
BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}]"  # noqa: E501


@dataclass(frozen=True)
class Options:
    """Preprocess settings, read from `PreprocessConfig` (defaults for keys it lacks)."""

    with_audio: bool = True
    vae_tiling: bool = False  # for real clips on GPUs: 121x512x768 through the VAE in tiles
    frame_reader: str = "auto"  # auto | decord | pyav (same frames; see ltx.frames)
    text_chunk: int = 256  # clips per text phase: bounds host memory for cached text features
    reference: str = "none"  # none | edges: reference latents for the reference_video strategy
    text_encoder_quantize: str = "none"  # none | int8 | nf4 (trainer.text_encoder)
    keyframes: str = "none"  # none | first_last: keyframe images encoded (strategy keyframes)
    reference_downscale: int = 1  # references at 1/N of the clip's height and width
    ltx_version: str = "2.0"  # the model's: how keyframe images are re-compressed

    @classmethod
    def of(cls, cfg: PreprocessConfig, ltx_version: str = "2.0") -> Options:
        fields = cls.__dataclass_fields__
        kept = {k: v for k, v in cfg.model_dump().items() if k in fields}
        return cls(**kept, ltx_version=ltx_version)


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


@dataclass
class Stats:
    """What one rank did: weights resident at once (peak) and in all, and encode time."""

    peak_weight_bytes: int = 0
    all_weight_bytes: int = 0
    resident: int = 0
    loaded: set[str] = field(default_factory=set)

    def load(self, components: dict[str, Any]) -> None:
        size = sum(weight_bytes(c) for c in components.values())
        self.resident += size
        self.peak_weight_bytes = max(self.peak_weight_bytes, self.resident)
        new = {n: c for n, c in components.items() if n not in self.loaded}
        self.all_weight_bytes += sum(weight_bytes(c) for c in new.values())
        self.loaded |= set(new)

    def free(self, components: dict[str, Any]) -> None:
        self.resident -= sum(weight_bytes(c) for c in components.values())
        release(components)


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
        }
    )


def build_cache(
    manifest: Path,
    curated_dir: Path,
    cache_dir: Path,
    model_path: Path,
    model_cfg: ModelConfig,
    cfg: PreprocessConfig,
    *,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode every manifest clip whose shard is missing, stale or corrupted; keep the rest.
    Under torchrun each rank encodes its slice. Returns {entries, encoded, reused, skipped,
    peak_weight_bytes, all_weight_bytes, seconds}."""
    cache_dir, start = Path(cache_dir), time.perf_counter()
    lock = CacheLock(cache_dir)

    def plan_locked() -> Plan:  # rank 0 only: lock first, so errors reach every rank
        lock.acquire()
        return make_plan(manifest, curated_dir, cache_dir, model_path, model_cfg, cfg)

    group = process_group()
    try:
        plan, stats = group.from_rank0(plan_locked), Stats()
        mine = [plan.rows[i] for i in plan.todo[group.rank :: group.world]]
        group.all_ok(
            lambda: _encode_rows(
                mine, plan, curated_dir, cache_dir, model_path, model_cfg,
                Options.of(cfg, model_cfg.ltx_version),
                _device(device), stats, progress and group.rank == 0, group,
            )
        )  # fmt: skip
        empty = group.from_rank0(
            lambda: _empty_prompt_entry(
                cache_dir, plan, model_path, model_cfg, _device(device), Options.of(cfg)
            )
        )
        entries = group.from_rank0(lambda: commit(cache_dir, plan, empty))
    finally:
        lock.release()
    return {
        "entries": entries,
        "encoded": len(plan.todo),
        "reused": len(plan.kept),
        "skipped": not plan.todo,
        "peak_weight_bytes": stats.peak_weight_bytes,
        "all_weight_bytes": stats.all_weight_bytes,
        "seconds": round(time.perf_counter() - start, 3),
    }


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


# ---------------------------------------------------------------------------------- text layout


def compact_text(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One prompt's `encode_prompts` output -> its shard tensors: `text.<name>` [1, n, D] for the
    n attended tokens, `text_pad.<name>` [1, 1, D] (what every padded position held: the
    projection of a zero row) and `text_length` [1] = T."""
    mask = features[MASK]
    length, n = mask.shape[-1], int(mask.sum())
    if mask.shape[0] != 1 or not torch.equal(mask.cpu(), left_padding_mask(n, length)):
        raise ValueError(f"expected one left-padded prompt, got a mask {list(mask.shape)}")
    out = {TEXT_LENGTH: torch.tensor([length], dtype=torch.int64)}
    for name, value in features.items():
        if name == MASK:
            continue
        padded = value[:, : length - n]
        pad = padded[:, :1] if n < length else torch.zeros_like(value[:, :1])
        # Re-padding must give back exactly these tensors: refuse anything a row cannot rebuild.
        if not torch.equal(padded, pad.expand_as(padded)):
            raise ValueError(f"{name}: the padded positions differ; cannot store it compactly")
        out[f"{TEXT}{name}"] = value[:, length - n :].clone()
        out[f"{PAD}{name}"] = pad.clone()
    return out


def text_inputs(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A shard's text as training feeds it, bit for bit what `encode_prompts` gave:
    `prompt_features` [1, T, D] (and `audio_prompt_features` [1, T, D_a] where cached),
    left-padded, and `prompt_attention_mask` [1, T] int64 0/1. Reads both layouts."""
    if TEXT_LENGTH not in tensors:  # format 2 stored the padded tensors themselves
        return {k.removeprefix(TEXT): v for k, v in tensors.items() if k.startswith(TEXT)}
    length = int(tensors[TEXT_LENGTH])
    out = {}
    for key, value in tensors.items():
        if key.startswith(TEXT):
            name, n = key.removeprefix(TEXT), value.shape[1]
            pad = tensors[PAD + name].expand(value.shape[0], length - n, -1)
            out[name] = torch.cat([pad, value], dim=1)
            out[MASK] = left_padding_mask(n, length)
    return out


def left_padding_mask(tokens: int, length: int) -> torch.Tensor:
    """[1, length] int64: zeros, then `tokens` ones (Gemma pads prompts on the left)."""
    mask = torch.zeros(1, length, dtype=torch.int64)
    mask[:, length - tokens :] = 1
    return mask


# ------------------------------------------------------------------------------------ planning


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


@torch.no_grad()
def _empty_prompt_entry(
    cache_dir: Path,
    plan: Plan,
    model_path: Path,
    model_cfg: ModelConfig,
    device: str,
    opts: Options,
) -> dict[str, Any]:
    """The "" caption encoded once per model (rank 0; reused while its fingerprint holds): one
    extra text-encoder load the first time, none after."""
    if plan.empty is not None:
        return plan.empty
    parts = load_text_parts(model_path, model_cfg, device, opts.text_encoder_quantize)
    features = encode_prompts(parts, [""])
    release(parts)
    tensors = compact_text({k: v.detach().to("cpu") for k, v in features.items()})
    tensors = {k: v.contiguous() for k, v in sorted(tensors.items())}
    metadata = {"fingerprint": plan.empty_fingerprint, "ltx_version": plan.identity["ltx_version"]}
    data = canonical(serialize(tensors, metadata=metadata))
    path = Path(cache_dir) / EMPTY_PROMPT_FILE
    with _disk_errors(path), atomic_path(path) as tmp:
        _write_file(tmp, data)
    return {
        "file": EMPTY_PROMPT_FILE,
        "sha256": sha256_bytes(data),
        "fingerprint": plan.empty_fingerprint,
    }


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
    return {**row, "clip_sha256": sha256_file(path)}


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


# ------------------------------------------------------------------------------------ encoding


@torch.no_grad()
def _encode_rows(
    rows: list[dict[str, Any]],
    plan: Plan,
    curated_dir: Path,
    cache_dir: Path,
    model_path: Path,
    model_cfg: ModelConfig,
    opts: Options,
    device: str,
    stats: Stats,
    show: bool,
    group: Group,
) -> None:
    """Per chunk: text encoder in, captions encoded, text encoder out; then the VAEs. Only one
    phase's weights are resident at a time, and the transformer is never loaded."""
    journal = Journal(cache_dir / f"{JOURNAL_PREFIX}{group.rank}.jsonl")
    desc = "preprocess" if group.world == 1 else f"preprocess rank 0/{group.world}"
    with _progress(len(rows), desc, show) as bar:
        for start in range(0, len(rows), opts.text_chunk):
            chunk = rows[start : start + opts.text_chunk]
            text = _encode_texts(chunk, model_path, model_cfg, device, opts, stats)
            vaes = _load_vaes(chunk, model_path, model_cfg, device, opts, stats)
            for row, media in _prefetch(chunk, curated_dir, opts):
                tensors = _encode_media(vaes, media, opts) | text[row["caption"]]
                journal.append(row["id"], _write_shard(cache_dir, row, tensors, plan))
                bar.update()
            stats.free(vaes)


def _progress(total: int, desc: str, show: bool) -> tqdm:
    """A bar on stderr with clips/s and the time left."""
    # nothing to encode (an up-to-date cache): no empty 0/0 bar, the stage's line says so
    return tqdm(
        total=total,
        desc=desc,
        unit="clip",
        disable=not show or total == 0,
        bar_format=BAR,
        smoothing=0.1,
    )


def _encode_texts(
    rows: list[dict[str, Any]],
    model_path: Path,
    model_cfg: ModelConfig,
    device: str,
    opts: Options,
    stats: Stats,
) -> dict[str, dict[str, torch.Tensor]]:
    """caption -> its shard tensors (`compact_text`); one prompt per call, so a shard's bytes
    never depend on which captions shared its batch (1 rank or 8 give identical files)."""
    parts = load_text_parts(model_path, model_cfg, device, opts.text_encoder_quantize)
    stats.load(parts)
    out = {}
    for caption in sorted({r["caption"] for r in rows}):
        features = encode_prompts(parts, [caption])
        out[caption] = compact_text({k: v.to("cpu") for k, v in features.items()})
    stats.free(parts)  # the text encoder leaves before the VAEs come in
    return out


def _load_vaes(
    rows: list[dict[str, Any]],
    model_path: Path,
    model_cfg: ModelConfig,
    device: str,
    opts: Options,
    stats: Stats,
) -> dict[str, Any]:
    names = ["vae"] + (["audio_vae"] if opts.with_audio and _any_audio(rows) else [])
    vaes = load_components(model_path, names, model_cfg.dtype)
    for vae in vaes.values():
        vae.to(device)
    if opts.vae_tiling:
        vaes["vae"].enable_tiling()
    stats.load(vaes)
    return vaes


def _any_audio(rows: list[dict[str, Any]]) -> bool:
    # Manifests from curation say so; a row without the key may still have audio.
    return any(r.get("has_audio", True) for r in rows)


@dataclass
class Media:
    """Decoded inputs of one clip: frames uint8 [F, H, W, 3]; audio float32 [C, N] or None."""

    frames: np.ndarray
    audio: np.ndarray | None
    sample_rate: int | None


def _read_media(row: dict[str, Any], curated_dir: Path, opts: Options) -> Media:
    path = Path(curated_dir) / row["path"]
    width, height, frames = row["bucket"]
    video = read_frames(path, range(frames), (width, height), opts.frame_reader)
    audio, rate = (
        read_audio(path) if opts.with_audio and row.get("has_audio", True) else (None, None)
    )
    return Media(video, audio, rate)


def _prefetch(
    rows: list[dict[str, Any]], curated_dir: Path, opts: Options
) -> Iterator[tuple[dict[str, Any], Media]]:
    """Decode the next clip on a thread while the current one encodes (decoders and torch
    release the GIL), so the encoder is never waiting on the decoder."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_read_media, rows[0], curated_dir, opts) if rows else None
        for i, row in enumerate(rows):
            media = pending.result()
            if i + 1 < len(rows):
                pending = pool.submit(_read_media, rows[i + 1], curated_dir, opts)
            yield row, media


def _encode_media(vaes: dict[str, Any], media: Media, opts: Options) -> dict[str, torch.Tensor]:
    tensors = {"video": encode_video(vaes["vae"], torch.from_numpy(media.frames))}
    if opts.reference == "edges":
        control = downscaled(edge_frames(media.frames), opts.reference_downscale, vaes["vae"])
        tensors["reference"] = encode_video(vaes["vae"], torch.from_numpy(control))
    if opts.keyframes == "first_last":  # as the condition pipeline encodes its two images
        for key, frame in ((KEYFRAME_FIRST, media.frames[0]), (KEYFRAME_LAST, media.frames[-1])):
            image = keyframe_image(frame, opts.ltx_version)
            tensors[key] = encode_video(vaes["vae"], torch.from_numpy(image[None]))
    if opts.with_audio and media.audio is not None and "audio_vae" in vaes:
        audio = torch.from_numpy(media.audio)
        tensors["audio"] = encode_audio(vaes["audio_vae"], audio, media.sample_rate)
    return tensors


# ------------------------------------------------------------------------------------- writing


def _write_shard(
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
    with _disk_errors(cache_dir / name), atomic_path(cache_dir / name) as tmp:
        _write_file(tmp, data)
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


# ---------------------------------------------------------------------- processes and locking


class Group:
    """One process (the null object); `TorchGroup` is the same API over torch.distributed."""

    rank, world = 0, 1

    def from_rank0(self, fn: Callable[[], Any]) -> Any:
        """fn() run on rank 0, its result (or its error) given to every rank."""
        return fn()

    def all_ok(self, fn: Callable[[], Any]) -> None:
        """Run fn() on every rank; if any rank fails, every rank raises (none hangs)."""
        fn()


class TorchGroup(Group):
    """Ranks of a torchrun job. Objects travel over gloo, whatever backend training uses."""

    def __init__(self, pg: Any) -> None:
        import torch.distributed as dist

        self.dist, self.pg = dist, pg
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def from_rank0(self, fn: Callable[[], Any]) -> Any:
        box: list[Any] = [_attempt(fn) if self.rank == 0 else None]
        self.dist.broadcast_object_list(box, src=0, group=self.pg)
        return _unwrap(box[0], "rank 0")

    def all_ok(self, fn: Callable[[], Any]) -> None:
        mine = _attempt(fn)
        results: list[Any] = [None] * self.world
        self.dist.all_gather_object(results, mine, group=self.pg)
        _unwrap(mine, f"rank {self.rank}")  # this rank's own error first, with its traceback
        for rank, result in enumerate(results):
            _unwrap(result, f"rank {rank}")


def _attempt(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", fn())
    except UserError as e:
        return ("user", str(e))
    except Exception as e:
        return ("error", f"{type(e).__name__}: {e}")


def _unwrap(result: tuple[str, Any], who: str) -> Any:
    kind, value = result
    if kind == "ok":
        return value
    if kind == "user":
        raise UserError(value if who == "rank 0" else f"{who}: {value}")
    raise RuntimeError(f"preprocess failed on {who}: {value}")


_GLOO_GROUP: dict[str, Any] = {}  # the gloo group for objects, made once per process


def process_group() -> Group:
    """The torchrun job this process belongs to (WORLD_SIZE > 1), else a single process.
    Initialised once and kept for the process's life: a second init after a destroy reuses
    the launcher's store and can hang (seen with two preprocess calls in one job); training
    (Accelerate) then finds the group ready, with NCCL for CUDA tensors on GPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Group()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        # Planning hashes every clip on rank 0: give it time before the others time out.
        dist.init_process_group(backend=backend, timeout=timedelta(hours=2))
        atexit.register(_destroy_process_group)
    if "pg" not in _GLOO_GROUP:
        plain = dist.get_backend() == "gloo"
        _GLOO_GROUP["pg"] = None if plain else dist.new_group(backend="gloo")
    return TorchGroup(_GLOO_GROUP["pg"])


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


class CacheLock:
    """One preprocess job per cache: a second one fails at once instead of mixing shards.
    The lock file sits beside the folder, so the folder holds only the cache (a DVC output)."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir, self.file = cache_dir, None

    def acquire(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.cache_dir.parent / f".{self.cache_dir.name}.lock"
        self.file = open(path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise UserError(
                f"another `ltx-lora preprocess` is writing {self.cache_dir} (lock {path}); "
                "wait for it to finish"
            ) from None

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing drops the flock
            self.file = None


def _device(device: str | None) -> str:
    """'cuda:<LOCAL_RANK>' when a GPU is there, else 'cpu', unless given."""
    if device:
        return device
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"
