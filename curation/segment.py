"""Segmenting a source: one sequential decode (`curation.cutter`) or one still, into
training-length segments whose kept clips are written as they are found.

The plan, the segment records and the frame grid live in `segment_types` and `timeline`; they
are re-exported here, where callers have always found them.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

from curation.config import CurationConfig
from curation.cutter import Cutter
from curation.decode import one_line, truncated_detail
from curation.probe import ProbeResult
from curation.quality import frame_stats, quality_reason, sharpness, signature
from curation.segment_types import ClipNamer, Damaged, Plan, Segment, segment_dict, write_segment
from curation.timeline import time_slots

__all__ = [
    "ClipNamer",
    "Damaged",
    "Plan",
    "Segment",
    "quality_reason",
    "segment_dict",
    "segment_source",
    "still_frame",
    "time_slots",
]


def segment_source(
    info: ProbeResult, plan: Plan, cfg: CurationConfig, clips_dir: Path, name: ClipNamer
) -> list[Segment]:
    """Every segment of `info`'s file, kept ones written to `clips_dir/<id>.mp4`.

    Damaged video spans and a cut tail become segment records; raises `Damaged` (after
    deleting what it wrote) only when no clip at all could be kept from a damaged file.
    """
    if info.still:
        return [_still_segment(info, plan, cfg, clips_dir, name)]
    cutter = Cutter(info, plan, cfg, clips_dir, name)
    try:
        cutter.run()
    except (av.FFmpegError, OSError, EOFError) as e:
        cutter.discard()
        raise Damaged("undecodable", f"the video cannot be read: {one_line(e)}") from e
    why = cutter.log.first_error or cutter.log.stopped
    if cutter.t0 is None and why:  # (no error: too little video for a clip, said later)
        raise Damaged("undecodable", f"no video frame decodes: {why}")
    kept = any(s.reason is None for s in cutter.segments)
    cut = cutter.cut_at()
    if cut is not None and not kept:
        cutter.discard()
        detail = truncated_detail(cut, info.duration_s, "no whole clip before the cut")
        raise Damaged("truncated", detail)
    if cut is not None:
        # Spans are in source time, like the clips' (MPEG-PS/TS seldom start at 0); an
        # MPEG-PS/TS lists no length beyond its data, so the cut is at (or past) its end.
        t0 = cutter.t0 or 0.0
        start, end = round(t0 + cut, 6), round(t0 + max(info.duration_s, cut), 6)
        tail = Segment(cutter.scene, len(cutter.segments), -1, start, end, {})
        tail.reason = "truncated"
        tail.detail = truncated_detail(cut, info.duration_s, "the clips before the cut are kept")
        cutter.segments.append(tail)
    return cutter.segments


def _still_segment(
    info: ProbeResult, plan: Plan, cfg: CurationConfig, clips_dir: Path, name: ClipNamer
) -> Segment:
    arr = still_frame(info, plan)
    sharp = sharpness(arr)
    luma = frame_stats(arr).luma
    quality = {"luma": round(luma, 2), "motion": 0.0, "sharpness": round(sharp, 2)}
    seg = Segment(0, 0, 0, 0.0, 0.0, quality)
    verdict = quality_reason([luma], [], sharp, cfg, still=True)
    if verdict is not None:
        seg.reason, seg.detail = verdict
        return seg
    seg.clip_id = name(0)
    write_segment(clips_dir / f"{seg.clip_id}.mp4", [arr], None, cfg)
    seg.phash = [signature(arr)] * 3
    return seg


def still_frame(info: ProbeResult, plan: Plan) -> np.ndarray:
    """A still, upright per its EXIF orientation, cropped and scaled to the bucket."""
    with Image.open(info.path) as img:
        upright = ImageOps.exif_transpose(img).convert("RGB")
    return np.asarray(upright.resize(plan.bucket, Image.Resampling.BICUBIC, box=plan.box))
