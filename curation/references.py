"""Reference files for multi-reference IC-LoRA: `clip_ref0.mp4`, `clip_ref1.png`, ... beside
`clip.mp4` in raw/ are that clip's reference sheet, carried through curation with it.

Rules (docs/datasets.md, "Reference files"):
- `<stem>_ref<N>.<video or still suffix>` (N optional, digits) is a reference of the clip input
  `<stem>.<suffix>` in the same folder; the sheet's order is N's (`_ref` alone first). One with
  no such clip beside it is an ordinary input. evaluation/conditioning.py reads the same names.
- Each reference is probed and decoded like a clip. A reference that cannot be used (empty,
  unsupported, undecodable, damaged) gets its own file-level quarantine row, and the clip's
  source is quarantined too (`broken_reference`, naming it): a sample trained without the sheet
  it was paired with would teach the wrong conditioning. References of a source quarantined for
  its own reasons are not read.
- A kept clip's references are conformed to its bucket as the IC-LoRA pipelines fit a reference
  (centre crop to the bucket's aspect, resize; the first frames, as diffusers trims to
  `num_frames` and ltx-pipelines caps at `frame_cap=num_frames`): a video to the clip's fps and at
  most its frames, cut to the longest valid count (temporal*k + 1), written as h264 like clips; a
  still as one PNG frame. Files `clips/<clip id>_ref<i>.mp4|png`, listed in the manifest row as
  `references: [{path, source, sha256, kind, frames}]`. `preprocess.reference_downscale` shrinks
  them later, at encoding.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from curation.buckets import cover_box
from curation.config import CurationConfig
from curation.decode import DecodeLog, one_line, video_frames
from curation.frames import rgb_converter
from curation.ingest import STILL_SUFFIXES, VIDEO_SUFFIXES, classify
from curation.media import write_clip
from curation.outcomes import quarantine_row
from curation.probe import ProbeFailure, ProbeResult, probe, probe_still
from curation.segment import Plan, still_frame
from ltx.buckets import BucketRules

REFERENCE_NAME = re.compile(r"^(?P<stem>.+)_ref(?P<n>\d*)$")
MEDIA = VIDEO_SUFFIXES | STILL_SUFFIXES
_EPS = 1e-6


@dataclass(frozen=True)
class Conformed:
    """A reference fitted to a clip's bucket: uint8 frames [f, H, W, 3]."""

    source: str
    sha256: str
    frames: np.ndarray
    still: bool


@dataclass(frozen=True)
class Broken:
    """A reference that cannot be used, with a quarantine reason and detail."""

    source: str
    sha256: str | None
    reason: str
    detail: str


def split_inputs(inputs: list[Path], raw_dir: Path) -> tuple[list[Path], dict[str, list[str]]]:
    """(clip inputs, {clip source: its reference sources in sheet order}), sources relative to
    `raw_dir` as the manifest writes them."""
    clips = {p.with_suffix(""): p for p in inputs if not REFERENCE_NAME.match(p.stem)}
    sheets: dict[str, list[tuple[int, str]]] = defaultdict(list)
    kept = []
    for path in inputs:
        match = REFERENCE_NAME.match(path.stem)
        owner = clips.get(path.with_name(match["stem"])) if match else None
        if owner is None or path.suffix.lower() not in MEDIA:
            kept.append(path)
            continue
        order = int(match["n"]) if match["n"] else -1
        sheets[_rel(owner, raw_dir)].append((order, _rel(path, raw_dir)))
    return kept, {clip: [s for _, s in sorted(refs)] for clip, refs in sheets.items()}


def attach(
    rows: list[dict],
    dropped: list[dict],
    sheets: dict[str, list[str]],
    raw_dir: Path,
    out: Path,
    cfg: CurationConfig,
    rules: BucketRules,
) -> list[dict]:
    """The manifest rows with their conformed references written beside their clips (under
    `out`); a source with a broken reference loses its rows and clip files, and it and the
    reference are quarantined (appended to `dropped`)."""
    by_source: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_source[row["source"]].append(row)
    kept: set[str] = set()
    for source, own in by_source.items():
        refs = sheets.get(source, [])
        fitted = [conform(raw_dir, ref, own[0], cfg, rules) for ref in refs]
        broken = [f for f in fitted if isinstance(f, Broken)]
        if broken:
            _quarantine(own, broken, dropped, out)
            continue
        for row in own:
            row["references"] = [_write(out, row, i, c, cfg) for i, c in enumerate(fitted)]
        kept |= {row["id"] for row in own}
    return [r for r in rows if r["id"] in kept]


def conform(
    raw_dir: Path, source: str, row: dict[str, Any], cfg: CurationConfig, rules: BucketRules
) -> Conformed | Broken:
    """One reference probed, decoded and fitted to `row`'s bucket, or why it cannot be."""
    path = raw_dir / source
    kind, detail = classify(path, raw_dir)
    if kind not in ("video", "still"):
        return Broken(source, None, kind, detail)
    info = probe_still(path) if kind == "still" else probe(path)
    if isinstance(info, ProbeFailure):
        return Broken(source, info.sha256, info.reason, info.detail)
    bucket = (row["width"], row["height"])
    box = cover_box((0.0, 0.0, *map(float, info.display_size)), bucket)
    if info.still:
        frame = still_frame(info, Plan(bucket, box, 1, row["fps"]))
        return Conformed(source, info.sha256, frame[None], still=True)
    frames, problem = _first_frames(info, bucket, box, row["fps"], row["frames"])
    if problem:
        return Broken(source, info.sha256, *problem)
    count = rules.floor_frames(len(frames))
    return Conformed(source, info.sha256, np.stack(frames[:count]), still=False)


def _first_frames(
    info: ProbeResult, bucket: tuple[int, int], box: tuple, fps: float, limit: int
) -> tuple[list[np.ndarray], tuple[str, str] | None]:
    """Up to `limit` frames at `fps` from the start (each slot shows the last stored frame at
    or before its time), fitted to the bucket; and a problem (reason, detail) or None."""
    convert, log, out = rgb_converter(info, bucket, box), DecodeLog(), []
    current = None
    try:
        with av.open(str(info.path)) as container:
            stream = container.streams.video[0]
            for frame in video_frames(container, stream, log):
                if frame is None:
                    return out, ("damaged_video", f"near frame {len(out)}: {log.first_error}")
                t = float(frame.time or 0.0)
                while len(out) < limit and t > len(out) / fps + _EPS and current is not None:
                    out.append(current)
                current = convert(frame)
                if len(out) >= limit:
                    break
    except (av.FFmpegError, OSError, ValueError) as e:
        return out, ("undecodable", one_line(e))
    while current is not None and len(out) < limit and len(out) / fps < info.duration_s - _EPS:
        out.append(current)  # the last frame holds until the reference ends
    return out, None if out else ("undecodable", "no frame could be decoded")


def _quarantine(own: list[dict], broken: list[Broken], dropped: list[dict], out: Path) -> None:
    for row in own:
        (out / row["path"]).unlink(missing_ok=True)
    for ref in broken:
        dropped.append(quarantine_row(ref.source, ref.sha256, ref.reason, ref.detail))
    first = broken[0]
    detail = (
        f"its reference {first.source} cannot be used ({first.reason}: {first.detail}); "
        "fix or remove the reference and re-run `ltx-lora curate`"
    )
    source, sha = own[0]["source"], own[0]["source_sha256"]
    dropped.append(quarantine_row(source, sha, "broken_reference", detail))


def _write(out: Path, row: dict, index: int, ref: Conformed, cfg: CurationConfig) -> dict:
    """The conformed reference as `clips/<clip id>_ref<index>.png|mp4`; its manifest entry."""
    name = f"clips/{row['id']}_ref{index}.{'png' if ref.still else 'mp4'}"
    if ref.still:
        Image.fromarray(ref.frames[0]).save(out / name, optimize=False)
    else:
        frames = list(ref.frames)
        write_clip(out / name, frames, row["fps"], gop=cfg.gop, crf=cfg.crf, preset=cfg.preset)
    kind = "still" if ref.still else "video"
    entry = {"path": name, "source": ref.source, "sha256": ref.sha256, "kind": kind}
    return {**entry, "frames": len(ref.frames)}


def _rel(path: Path, raw_dir: Path) -> str:
    return path.relative_to(raw_dir).as_posix()
