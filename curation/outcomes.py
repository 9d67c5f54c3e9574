"""What curation writes per input: manifest rows for kept clips, quarantine rows for the rest.

Every input lands in exactly one place: as the source of manifest rows, or as one file-level
quarantine row; dropped segments of a kept source are segment-level quarantine rows.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from curation.buckets import area
from curation.config import CurationConfig

MANIFEST_SCHEMA = 2


def kept_segments(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in result["segments"] if s["reason"] is None]


def outcomes(
    probed: Any, results: dict[str, dict], cfg: CurationConfig
) -> tuple[list[dict], list[dict]]:
    """Manifest rows and quarantine rows; each input is a manifest source xor one file row."""
    rows: list[dict] = []
    dropped: list[dict] = []
    for rec in probed:
        source, sha = rec["source"], rec["sha256"]
        if rec["reason"] is not None or rec["duplicate_of"] is not None:
            reason = rec["reason"] or "duplicate"
            detail = rec["detail"] or f"same bytes as {rec['duplicate_of']}"
            dropped.append(quarantine_row(source, sha, reason, detail))
            continue
        result = results[source]
        kept = kept_segments(result)
        if result["reason"] is not None or not kept:
            reason, detail = file_verdict(result)
            dropped.append(quarantine_row(source, sha, reason, detail))
            continue
        rows += [manifest_row(result, seg, kept, cfg) for seg in kept]
        dropped += [
            quarantine_row(source, sha, s["reason"], s["detail"], (s["start_s"], s["end_s"]))
            for s in result["segments"]
            if s["reason"] is not None
        ]
    return rows, dropped


def file_verdict(result: dict[str, Any]) -> tuple[str, str]:
    """Why a source gave no clip: its own failure, its segments' commonest reason, or length."""
    if result["reason"] is not None:
        return result["reason"], result["detail"]
    reasons = Counter(s["reason"] for s in result["segments"])
    if not reasons:
        return "too_short", "no scene is as long as one clip: every scene was cut before it filled"
    reason = reasons.most_common(1)[0][0]
    first = next(s for s in result["segments"] if s["reason"] == reason)
    counts = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
    return reason, f"every segment dropped ({counts}); first: {first['detail']}"


def quarantine_row(
    source: str, sha: str | None, reason: str, detail: str, span: tuple[float, float] | None = None
) -> dict[str, Any]:
    return {
        "source": source,
        "source_sha256": sha,
        "reason": reason,
        "detail": detail,
        "level": "file" if span is None else "segment",
        "start_s": span[0] if span else None,
        "end_s": span[1] if span else None,
    }


def manifest_row(
    result: dict[str, Any], seg: dict[str, Any], kept: list[dict], cfg: CurationConfig
) -> dict[str, Any]:
    info, plan = result["probe"], result["plan"]
    (bw, bh), frames, fps = plan["bucket"], plan["frames"], plan["fps"]
    lost = discarded(info, plan, len(kept))
    repairs = seg.get("repairs", [])
    sound = info["has_audio"] and not any(r["what"] == "audio" for r in repairs)
    return {
        "schema": MANIFEST_SCHEMA,
        "id": seg["clip_id"],
        "path": f"clips/{seg['clip_id']}.mp4",
        "source": result["source"],
        "source_sha256": result["sha256"],
        "scene": seg["scene"],
        "segment": seg["index"],
        "start_s": seg["start_s"],
        "end_s": seg["end_s"],
        "fps": fps,
        "frames": frames,
        "width": bw,
        "height": bh,
        "codec": "h264",
        "still": info["still"],
        "has_audio": sound,
        "audio_sample_rate": cfg.audio_sample_rate if sound else None,
        "audio_channels": cfg.audio_channels if sound else None,
        "bucket": [bw, bh, frames],
        "split": None,
        "crop_box": [round(v, 2) for v in plan["box"]],
        "letterboxed": info["content_box"] is not None,
        "crop_fraction": round(lost["letterbox"] + lost["aspect_crop"], 4),
        "frames_dropped_fraction": lost["time"],
        "discarded": lost,
        "quality": seg["quality"],
        "phash": seg["phash"],
        "source_size": list(info["display_size"]),
        "source_fps": round(info["fps"], 4),
        "source_effective_fps": info.get("effective_fps") or round(info["fps"], 4),
        "source_duration_s": round(info["duration_s"], 4),
        "source_vfr": info["vfr"],
        "source_rotation": info["rotation"],
        "repairs": repairs,
    }


def discarded(info: dict[str, Any], plan: dict[str, Any], kept: int) -> dict[str, float]:
    """Fractions of the source each choice threw away (see docs/datasets.md)."""
    w, h = info["display_size"]
    content = info["content_box"] or (0.0, 0.0, float(w), float(h))
    box, (bw, bh) = tuple(plan["box"]), plan["bucket"]
    kept_s = kept * plan["frames"] / plan["fps"]
    duration = info["duration_s"]
    return {
        "letterbox": round(1 - area(content) / (w * h), 4),
        "aspect_crop": round((area(content) - area(box)) / (w * h), 4),
        "resolution": round(max(0.0, 1 - bw * bh / area(box)), 4),
        "time": 0.0 if info["still"] else round(max(0.0, 1 - kept_s / duration), 4),
        "fps": 0.0 if info["still"] else round(max(0.0, 1 - plan["fps"] / info["fps"]), 4),
    }
