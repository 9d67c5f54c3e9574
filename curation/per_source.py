"""Per-source work of `ltx-lora curate`, run inside `datasets.map`'s worker processes: classify
and probe a file and plan its bucket and crop; segment it into clips (or reuse last run's).
Results cross the process boundary as JSON."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from curation.buckets import cover_box, nearest_bucket, upscale_needed
from curation.config import CurationConfig
from curation.decode import truncated_detail
from curation.ingest import classify
from curation.probe import ProbeFailure, ProbeResult, probe, probe_still
from curation.segment import Damaged, Plan, segment_dict, segment_source
from stagekit.hashing import sha256_file, sha256_json

# Bump when the algorithm changes what a curated clip holds: old outputs then re-curate.
CURATE_VERSION = 4


def probe_batch(
    batch: dict[str, list], raw_dir: str, cfg_json: str, buckets: list[list[int]]
) -> dict[str, list]:
    """Classify and probe each file; a plan (bucket + crop) for those that can be curated."""
    cfg = CurationConfig.model_validate_json(cfg_json)
    out: dict[str, list] = {k: [] for k in ("source", "sha256", "reason", "detail", "info")}
    for source, known in zip(batch["source"], batch["sha256"], strict=True):
        sha, reason, detail, info = _probe_one(Path(raw_dir), source, cfg, buckets, known)
        for key, value in zip(out, (source, sha, reason, detail, info), strict=True):
            out[key].append(value)
    return out


def _probe_one(
    raw_dir: Path, source: str, cfg: CurationConfig, buckets: list[list[int]], known: str | None
) -> tuple[str | None, str | None, str, str]:
    """(sha256, reason or None, detail, probe + plan as JSON). `known`: the file's sha256
    as the run's fingerprint hashed it, None for a link (its target is hashed here)."""
    path = raw_dir / source
    kind, detail = classify(path, raw_dir)
    if kind not in ("video", "still"):
        sha = None if kind in ("symlink_outside", "broken_link") else known or _sha_or_none(path)
        return sha, kind, detail, ""
    if kind == "still" and not cfg.stills:
        sha = known or sha256_file(path)
        return sha, "unsupported_still", "stills are off (curation.stills)", ""
    luma = cfg.filters.letterbox_luma if cfg.filters.letterbox else None
    info = probe_still(path, luma, known) if kind == "still" else probe(path, luma, known)
    if isinstance(info, ProbeFailure):
        return info.sha256, info.reason, info.detail, ""
    verdict = _plan(info, cfg, [tuple(b) for b in buckets])  # type: ignore[misc]
    if isinstance(verdict, tuple):
        return info.sha256, verdict[0], verdict[1], ""
    return info.sha256, None, "", json.dumps({"probe": _info_dict(info), "plan": asdict(verdict)})


def _plan(
    info: ProbeResult, cfg: CurationConfig, buckets: list[tuple[int, int]]
) -> Plan | tuple[str, str]:
    """The bucket and crop for a source, or (reason, detail) when it is too short or small."""
    need = (cfg.frames - 0.5) / cfg.fps
    cut = info.truncated_at
    if not info.still and cut is not None and cut < need:
        short = f"too short for one clip ({cfg.frames / cfg.fps:.2f} s)"
        return "truncated", truncated_detail(cut, info.duration_s, short)
    if not info.still and info.duration_s < need:
        return (
            "too_short",
            f"{info.duration_s:.2f} s; needs {cfg.frames} frames at {cfg.fps:g} fps "
            f"({cfg.frames / cfg.fps:.2f} s)",
        )
    w, h = info.display_size
    content = info.content_box or (0.0, 0.0, float(w), float(h))
    size = (content[2] - content[0], content[3] - content[1])
    bucket = nearest_bucket(size, buckets)  # type: ignore[arg-type]
    box = cover_box(content, bucket)
    if (up := upscale_needed(box, bucket)) > cfg.filters.max_upscale + 1e-9:
        return (
            "too_small",
            f"{round(size[0])}x{round(size[1])} would be enlarged {up:.2f}x to fill "
            f"{bucket[0]}x{bucket[1]} (curation.filters.max_upscale {cfg.filters.max_upscale:g})",
        )
    return Plan(bucket, box, 1 if info.still else cfg.frames, cfg.fps)


def segment_batch(
    batch: dict[str, list],
    cfg_json: str,
    buckets: list[list[int]],
    clips_dir: str,
    previous_clips: str,
) -> dict[str, list]:
    """Segment each source (or copy last run's clips when its result is reusable)."""
    cfg = CurationConfig.model_validate_json(cfg_json)
    out: dict[str, list] = {"source": [], "result": []}
    for source, sha, info_json, prev in zip(
        batch["source"], batch["sha256"], batch["info"], batch["previous"], strict=True
    ):
        result = _reused(source, prev, Path(previous_clips), Path(clips_dir))
        if result is None:
            result = _segment_one(source, sha, info_json, cfg, Path(clips_dir))
        out["source"].append(source)
        out["result"].append(json.dumps(result))
    return out


def _segment_one(
    source: str, sha: str, info_json: str, cfg: CurationConfig, clips_dir: Path
) -> dict[str, Any]:
    data = json.loads(info_json)
    info = _info_from_dict(data["probe"])
    plan = Plan(**{**data["plan"], "bucket": tuple(data["plan"]["bucket"])})
    media = {"media": cfg.media_fields(), "version": CURATE_VERSION, "sha": sha}
    box = [round(v, 2) for v in plan.box]

    def name(slot: int) -> str:
        return sha256_json(
            {**media, "slot": slot, "bucket": [*plan.bucket, plan.frames], "box": box}
        )[:16]

    base = {"source": source, "sha256": sha, "settings": settings_hash(cfg), "reused": False}
    base |= {"probe": data["probe"], "plan": data["plan"]}
    try:
        segments = segment_source(info, plan, cfg, clips_dir, name)
    except Damaged as e:
        return {**base, "reason": e.reason, "detail": e.detail, "segments": []}
    return {**base, "reason": None, "detail": "", "segments": [segment_dict(s) for s in segments]}


def _reused(source: str, prev: str, previous_clips: Path, clips_dir: Path) -> dict[str, Any] | None:
    """Last run's result for this source if every clip it kept is still on disk, copied in."""
    if not prev:
        return None
    result = json.loads(prev)
    names = [f"{s['clip_id']}.mp4" for s in result["segments"] if s["clip_id"]]
    if not all((previous_clips / n).is_file() for n in names):
        return None
    for n in names:
        shutil.copyfile(previous_clips / n, clips_dir / n)
    return {**result, "source": source, "reused": True}


def settings_hash(cfg: CurationConfig) -> str:
    """The settings a source's segments depend on (not the cross-source dedupe or the split)."""
    fields = cfg.segment_fields()
    for key in ("dedupe", "dedupe_distance", "leakage"):
        fields["filters"].pop(key)
    return sha256_json({"version": CURATE_VERSION, **fields})


def _info_dict(info: ProbeResult) -> dict[str, Any]:
    d = asdict(info)
    d["path"] = str(info.path)
    d["display_size"] = list(info.display_size)
    return d


def _info_from_dict(d: dict[str, Any]) -> ProbeResult:
    fields = {k: v for k, v in d.items() if k in ProbeResult.__dataclass_fields__}
    box = fields.get("content_box")
    return ProbeResult(
        **{**fields, "path": Path(d["path"]), "content_box": tuple(box) if box else None}
    )


def _sha_or_none(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None
