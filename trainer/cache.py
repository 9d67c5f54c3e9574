"""`ltx-lora preprocess`: latents and text embeddings cached to safetensors, never silently stale.

One shard per clip, `<clip id>.safetensors`, holding `video` [C, F', H', W'], optionally `audio`
[C, L, M'], conditioning latents per `preprocess.*` (`reference`, `reference.<i>`,
`keyframe_first` / `keyframe_last`), and the caption's text compactly
(`trainer.cache_text.compact_text`; `text_inputs` re-pads it). Its metadata header carries the
entry's fingerprint and LTX version; `index.json` carries each shard's sha256 so a corrupted file
is detected and re-encoded.

Crash safety: each shard is written atomically and then appended, as one JSON line, to its
rank's journal (`.journal-rank<r>.jsonl`); `index.json` is rewritten once at the end from the
old index plus the journals. A kill at any point loses at most the shard in flight: the next run
replays the journals, verifies each shard against its sha256 and encodes only what is missing.

Processes: under torchrun (WORLD_SIZE > 1) rank 0 plans (hashes clips and shards), every rank
encodes `todo[rank::world]`, and rank 0 merges the journals into the index.

This module encodes; the shards, fingerprints and index are `trainer.cache_index`, the text
layout `trainer.cache_text`, processes and the lock `trainer.cache_procs` (their public names
are importable from here too).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as serialize
from tqdm import tqdm

from ltx.config import ModelConfig
from ltx.controls import downscaled, edge_frames
from ltx.encode import encode_audio, encode_prompts, encode_video
from ltx.frames import read_frames
from ltx.keyframes import keyframe_latent
from ltx.loading import load_components, release, weight_bytes
from ltx.sampling import read_audio
from stagekit.hashing import sha256_bytes
from trainer.cache_index import (
    CACHE_FORMAT,
    EMPTY_PROMPT,
    EMPTY_PROMPT_FILE,
    INDEX,
    JOURNAL_PREFIX,
    OMITTED_DEFAULTS,
    RUNTIME_KEYS,
    Journal,
    Plan,
    canonical,
    commit,
    empty_prompt_fingerprint,
    entry_fingerprint,
    load_entry,
    make_plan,
    model_identity,
    read_entries,
    write_atomic,
    write_shard,
)
from trainer.cache_keyframes import (
    KEYFRAME_FIRST,
    KEYFRAME_INTERIOR,
    KEYFRAME_LAST,
    interior_keyframes,
)
from trainer.cache_procs import CacheLock, Group, TorchGroup, pick_device, process_group
from trainer.cache_references import (
    REFERENCE_PREFIX,
    read_references,
    reference_keys,
    reference_tensors,
)
from trainer.cache_text import (
    MASK,
    PAD,
    TEXT,
    TEXT_LENGTH,
    compact_text,
    left_padding_mask,
    text_inputs,
)
from trainer.config import PreprocessConfig
from trainer.text_encoder import load_text_parts

__all__ = [
    "CACHE_FORMAT",
    "EMPTY_PROMPT",
    "EMPTY_PROMPT_FILE",
    "INDEX",
    "JOURNAL_PREFIX",
    "KEYFRAME_FIRST",
    "KEYFRAME_INTERIOR",
    "KEYFRAME_LAST",
    "MASK",
    "OMITTED_DEFAULTS",
    "PAD",
    "REFERENCE_PREFIX",
    "RUNTIME_KEYS",
    "TEXT",
    "TEXT_LENGTH",
    "CacheLock",
    "Group",
    "Journal",
    "Plan",
    "TorchGroup",
    "build_cache",
    "canonical",
    "commit",
    "compact_text",
    "empty_prompt_fingerprint",
    "entry_fingerprint",
    "left_padding_mask",
    "load_entry",
    "make_plan",
    "model_identity",
    "process_group",
    "read_entries",
    "reference_keys",
    "text_inputs",
]

# Always clips/s and the time left (tqdm's default flips to s/clip below 1 clip/s).
BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}]"  # noqa: E501


@dataclass(frozen=True)
class Options:
    """Preprocess settings, read from `PreprocessConfig` (defaults for keys it lacks)."""

    with_audio: bool = True
    vae_tiling: bool = False  # for real clips on GPUs: 121x512x768 through the VAE in tiles
    frame_reader: str = "auto"  # auto | decord | pyav (same frames; see ltx.frames)
    text_chunk: int = 256  # clips per text phase: bounds host memory for cached text features
    reference: str = "none"  # none | edges | files: reference latents (IC-LoRA strategies)
    text_encoder_quantize: str = "none"  # none | int8 | nf4 (trainer.text_encoder)
    keyframes: str = "none"  # none | first_last | first_last_interior (strategy keyframes)
    reference_downscale: int = 1  # references at 1/N of the clip's height and width
    ltx_version: str = "2.0"  # the model's: how keyframe images are re-compressed

    @classmethod
    def of(cls, cfg: PreprocessConfig, ltx_version: str = "2.0") -> Options:
        fields = cls.__dataclass_fields__
        kept = {k: v for k, v in cfg.model_dump().items() if k in fields}
        return cls(**kept, ltx_version=ltx_version)


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
                pick_device(device), stats, progress and group.rank == 0, group,
            )
        )  # fmt: skip
        empty = group.from_rank0(
            lambda: _empty_prompt_entry(
                cache_dir, plan, model_path, model_cfg, pick_device(device), Options.of(cfg)
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
    write_atomic(Path(cache_dir) / EMPTY_PROMPT_FILE, data)
    return {
        "file": EMPTY_PROMPT_FILE,
        "sha256": sha256_bytes(data),
        "fingerprint": plan.empty_fingerprint,
    }


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
                journal.append(row["id"], write_shard(cache_dir, row, tensors, plan))
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
    references: list[np.ndarray] = field(default_factory=list)  # each uint8 [f_i, H, W, 3]


def _read_media(row: dict[str, Any], curated_dir: Path, opts: Options) -> Media:
    path = Path(curated_dir) / row["path"]
    width, height, frames = row["bucket"]
    video = read_frames(path, range(frames), (width, height), opts.frame_reader)
    audio, rate = (
        read_audio(path) if opts.with_audio and row.get("has_audio", True) else (None, None)
    )
    refs = read_references(row, curated_dir, opts.frame_reader) if opts.reference == "files" else []
    return Media(video, audio, rate, refs)


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
    if opts.reference == "files":  # multi-reference: each file encoded on its own
        tensors |= reference_tensors(vaes["vae"], media.references, opts.reference_downscale)
    if opts.keyframes != "none":  # as the condition pipeline encodes its images, one by one
        for key, frame in ((KEYFRAME_FIRST, media.frames[0]), (KEYFRAME_LAST, media.frames[-1])):
            tensors[key] = keyframe_latent(vaes["vae"], frame, opts.ltx_version)
    if opts.keyframes == "first_last_interior":
        tensors[KEYFRAME_INTERIOR] = interior_keyframes(vaes["vae"], media.frames, opts.ltx_version)
    if opts.with_audio and media.audio is not None and "audio_vae" in vaes:
        audio = torch.from_numpy(media.audio)
        tensors["audio"] = encode_audio(vaes["audio_vae"], audio, media.sample_rate)
    return tensors
