"""Near-duplicates across sources and leakage of reference clips, by perceptual signatures.

A clip is signed at three frames (first, middle, last) of what training sees: the cropped,
scaled bucket frames, so two encodes or sizes of one shot sign alike. A signature is a dHash
(structure) plus the mean colour; two frames match when both are close.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from curation.buckets import cover_box, nearest_bucket
from curation.frames import rgb_converter
from curation.probe import ProbeResult, probe, probe_still
from curation.quality import signature
from curation.segment import Plan, still_frame, time_slots

COLOUR_TOLERANCE = 24  # mean colour levels (0-255, per channel) two copies may differ by


def parse(hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Signatures -> (uint64 dHashes `[N]`, mean colours `[N, 3]` int16)."""
    bits = np.array([int(h[:16], 16) for h in hashes], dtype=np.uint64)
    colour = np.array([[int(h[i : i + 2], 16) for i in (16, 18, 20)] for h in hashes], np.int16)
    return bits, colour.reshape(-1, 3)


def _close(colour_a: np.ndarray, colour_b: np.ndarray) -> np.ndarray:
    return np.abs(colour_a - colour_b).max(axis=-1) <= COLOUR_TOLERANCE


def near_duplicates(
    items: Sequence[tuple[str, str, Sequence[str]]], max_distance: int
) -> dict[str, str]:
    """{later key: earlier key} for items (key, source, 3 hashes) matching an earlier item of
    another source at every hashed frame. Items of one source never match each other: a long
    static shot cut into segments is not a duplicate of itself."""
    kept_keys: list[str] = []
    kept_sources = np.zeros(len(items), np.int64)
    kept = np.zeros((len(items), 3), np.uint64)
    kept_colour = np.zeros((len(items), 3, 3), np.int16)
    source_ids: dict[str, int] = {}
    dupes: dict[str, str] = {}
    for key, source, hashes in items:
        (h, colour), sid = parse(hashes), source_ids.setdefault(source, len(source_ids))
        n = len(kept_keys)
        dist = np.bitwise_count(kept[:n] ^ h[None]).max(axis=1)
        alike = _close(kept_colour[:n], colour[None]).all(axis=1)
        hits = np.flatnonzero((dist <= max_distance) & alike & (kept_sources[:n] != sid))
        if hits.size:
            dupes[key] = kept_keys[int(hits[0])]
            continue
        kept[n], kept_colour[n], kept_sources[n] = h, colour, sid
        kept_keys.append(key)
    return dupes


def leaks(hashes: Sequence[str], reference: Sequence[str], max_distance: int) -> bool:
    """Two of a clip's three frames match some reference frame: the shot is a reference's."""
    if not reference:
        return False
    (h, colour), (ref, ref_colour) = parse(hashes), parse(reference)
    near = np.bitwise_count(h[:, None] ^ ref[None, :]) <= max_distance
    alike = _close(colour[:, None, :], ref_colour[None, :, :])
    return int((near & alike).any(axis=1).sum()) >= 2


def reference_hashes(
    path: Path, buckets: list[tuple[int, int]], letterbox_luma: float | None, fps: float
) -> list[str]:
    """dHashes of every frame of a reference clip (or still) at `fps`, cropped as curation
    would crop it: reference sets are small, and any curated frame may be the leaked one."""
    suffix = path.suffix.lower()
    is_still = suffix in {".jpg", ".jpeg", ".png", ".webp"}
    info = probe_still(path, letterbox_luma) if is_still else probe(path, letterbox_luma)
    if not isinstance(info, ProbeResult):
        return []
    plan = _plan(info, buckets, fps)
    if info.still:
        return [signature(still_frame(info, plan))]
    convert = rgb_converter(info, plan.bucket, plan.box)
    out: list[str] = []
    with av.open(str(path)) as container:
        frames = container.decode(container.streams.video[0])
        last = None
        for _, frame, _ in time_slots(frames, fps, info.fps or fps):
            if frame is not None and frame is not last:
                out.append(signature(convert(frame)))
                last = frame
    return out


def _plan(info: ProbeResult, buckets: list[tuple[int, int]], fps: float) -> Plan:
    w, h = info.display_size
    content = info.content_box or (0.0, 0.0, float(w), float(h))
    size = (content[2] - content[0], content[3] - content[1])
    bucket = nearest_bucket((round(size[0]), round(size[1])), buckets)
    return Plan(bucket, cover_box(content, bucket), 1, fps)
