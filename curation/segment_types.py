"""What segmenting a source works from and gives: the plan, each segment's record, the error
for a file that gives nothing, and how a kept segment is written."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from curation.buckets import Box
from curation.config import CurationConfig
from curation.media import write_clip


@dataclass(frozen=True)
class Plan:
    """How one source becomes clips: the bucket and the display region scaled into it."""

    bucket: tuple[int, int]
    box: Box
    frames: int
    fps: float


@dataclass
class Segment:
    """One training-length piece of a source; `reason` is None when its clip was written."""

    scene: int
    index: int
    start_slot: int
    start_s: float
    end_s: float
    quality: dict[str, float]
    reason: str | None = None
    detail: str = ""
    clip_id: str | None = None
    phash: list[str] = field(default_factory=list)
    repairs: list[dict[str, str]] = field(default_factory=list)  # what the clip lost or holds


class Damaged(Exception):
    """Decoding failed or stopped early: the file is truncated or corrupt."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


ClipNamer = Callable[[int], str]  # start slot -> clip id


def write_segment(
    dest: Path,
    frames: Sequence[av.VideoFrame] | Sequence[np.ndarray],
    audio: np.ndarray | None,
    cfg: CurationConfig,
) -> None:
    """Encode a kept segment's bucket frames (and sound) as curation's settings say."""
    write_clip(
        dest,
        frames,
        cfg.fps,
        audio=audio,
        sample_rate=cfg.audio_sample_rate,
        gop=cfg.gop,
        crf=cfg.crf,
        preset=cfg.preset,
    )


def segment_dict(seg: Segment) -> dict[str, Any]:
    """A JSON-able copy of `seg` (what crosses the datasets.map process boundary)."""
    return {k: getattr(seg, k) for k in Segment.__dataclass_fields__}
