"""Cached samples and a bucket-aware batch order: a batch never mixes shapes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from stagekit.errors import UserError
from stagekit.files import read_json
from stagekit.hashing import sha256_json
from trainer.cache import (
    INDEX,
    KEYFRAME_FIRST,
    KEYFRAME_INTERIOR,
    KEYFRAME_LAST,
    load_entry,
    reference_keys,
    text_inputs,
)


@dataclass
class Batch:
    """Stacked cache tensors: video [B, C, F, H, W], audio [B, C, L, M] or None, text.* [B, ...]."""

    video: torch.Tensor
    audio: torch.Tensor | None
    text: dict[str, torch.Tensor]
    fps: float
    shard: tuple[int, int] = (0, 1)  # (rank, world): this batch is that slice of a global one
    reference: torch.Tensor | None = None  # [B, C, F, H, W] clean control latents (IC-LoRA)
    # keyframe images, each encoded on its own: first and last frame [B, C, 1, H, W], and with
    # preprocess.keyframes=first_last_interior the interior ones [B, C, F-2, H, W]
    keyframes: tuple[torch.Tensor, ...] | None = None
    # multi-reference IC-LoRA: the clip's reference files in order, each [B, C, f_i, h, w]
    # (a still is one latent frame; h, w the clip's latent size / preprocess.reference_downscale)
    references: tuple[torch.Tensor, ...] | None = None


@dataclass
class Sample:
    """One shard's tensors as stored (text compact: `collate` pads it, so host memory holds only
    the attended tokens)."""

    clip_id: str
    tensors: dict[str, torch.Tensor]
    fps: float

    @property
    def shape_key(self) -> tuple:
        audio = self.tensors.get("audio")
        key = (
            tuple(self.tensors["video"].shape),
            None if audio is None else tuple(audio.shape),
            self.fps,
        )
        # a batch stacks each reference: clips with other reference shapes batch apart (only
        # added when there are references, so other caches keep their batch order)
        refs = tuple(tuple(self.tensors[k].shape) for k in reference_keys(self.tensors))
        return (*key, refs) if refs else key


def load_split(cache_dir: Path, split: str) -> list[Sample]:
    """Every cached sample of one split, in clip-id order (deterministic)."""
    index = read_json(cache_dir / INDEX)
    return [
        Sample(clip_id, load_entry(cache_dir, e), float(e["fps"]))
        for clip_id, e in sorted(index["entries"].items())
        if e["split"] == split
    ]


def collate(samples: list[Sample]) -> Batch:
    """Stack samples of one shape; text re-padded to the tensors `encode_prompts` gave."""
    first = samples[0].tensors
    texts = [text_inputs(s.tensors) for s in samples]
    text = {k: torch.cat([t[k] for t in texts]) for k in texts[0]}
    audio = torch.stack([s.tensors["audio"] for s in samples]) if "audio" in first else None
    reference = (
        torch.stack([s.tensors["reference"] for s in samples]) if "reference" in first else None
    )
    keys = (KEYFRAME_FIRST, KEYFRAME_LAST)
    keys += (KEYFRAME_INTERIOR,) if KEYFRAME_INTERIOR in first else ()
    keyframes = (
        tuple(torch.stack([s.tensors[k] for s in samples]) for k in keys)
        if KEYFRAME_LAST in first
        else None
    )
    keys = reference_keys(first)
    references = tuple(torch.stack([s.tensors[k] for s in samples]) for k in keys) if keys else None
    return Batch(
        torch.stack([s.tensors["video"] for s in samples]),
        audio,
        text,
        samples[0].fps,
        reference=reference,
        keyframes=keyframes,
        references=references,
    )


class BatchOrder:
    """Deterministic epochs: shuffle within each shape bucket, then shuffle the batches.

    Epoch `e`'s order depends only on (seed, e), so the position (epoch, index) is all a
    checkpoint needs to continue the exact same sequence. With `world` processes, a global
    batch holds `batch_size * world` clips of one shape and each rank takes its slice; a short
    last batch of a bucket is filled from the bucket's start, so every rank gets a full slice.
    """

    def __init__(
        self, samples: list[Sample], batch_size: int, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        if not samples:
            raise UserError(
                "no training clips in the cache: check the curate summary "
                "(every clip may have been quarantined or put in validation)"
            )
        self.samples, self.batch_size, self.seed = samples, batch_size, seed
        self.rank, self.world = rank, world
        buckets: dict[tuple, list[int]] = defaultdict(list)
        for i, s in enumerate(samples):
            buckets[s.shape_key].append(i)
        self.buckets = [buckets[k] for k in sorted(buckets, key=str)]

    def epoch(self, e: int) -> list[list[int]]:
        """Sample indices of each global batch of epoch `e`."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
        size = self.batch_size * self.world
        batches = []
        for group in self.buckets:
            perm = [group[i] for i in torch.randperm(len(group), generator=g).tolist()]
            for j in range(0, len(perm), size):
                batches.append([perm[(j + k) % len(perm)] for k in range(size)])
        return [batches[b] for b in torch.randperm(len(batches), generator=g).tolist()]

    def stream(self, epoch: int = 0, index: int = 0) -> Iterator[tuple[int, int, Batch]]:
        """Endless local batches from position (epoch, index), each with the position after it."""
        lo = self.rank * self.batch_size
        while True:
            batches = self.epoch(epoch)
            for i in range(index, len(batches)):
                nxt = (epoch, i + 1) if i + 1 < len(batches) else (epoch + 1, 0)
                mine = batches[i][lo : lo + self.batch_size]
                batch = collate([self.samples[j] for j in mine])
                yield *nxt, replace(batch, shard=(self.rank, self.world))
            epoch, index = epoch + 1, 0


def drop_captions(
    batch: Batch,
    empty: dict[str, torch.Tensor] | None,
    p: float,
    seed: int,
    step: int,
    micro: int,
) -> Batch:
    """Caption dropout: each clip of the global batch gets the empty prompt's conditioning with
    probability `p`. The draw is a pure function of (seed, step, micro-batch), so it needs no
    state in checkpoints and a resumed run drops exactly the same captions; it never touches
    the noise generator, so p = 0 trains exactly as before."""
    if empty is None or p <= 0:
        return batch
    rank, world = batch.shard
    n = batch.video.shape[0]
    g = torch.Generator().manual_seed(int(sha256_json([seed, step, micro])[:15], 16))
    drop = (torch.rand(n * world, generator=g) < p)[rank * n : (rank + 1) * n]
    if not drop.any():
        return batch
    text = {}
    for key, value in batch.text.items():
        mask = drop.reshape(-1, *([1] * (value.ndim - 1)))
        text[key] = torch.where(mask, empty[key].to(value).expand_as(value), value)
    return replace(batch, text=text)
