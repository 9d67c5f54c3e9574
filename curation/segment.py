"""One sequential decode per source: scene cuts, training-length segments, their quality, clips.

Frames are resampled by time to the target fps, cropped and scaled to the bucket as they are
decoded, measured, and encoded a segment at a time: memory holds one segment, never a source.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageOps

from curation.buckets import Box
from curation.config import CurationConfig
from curation.decode import AudioCursor, DecodeLog, one_line, truncated_detail, video_frames
from curation.frames import planes, to_rgb, yuv_converter
from curation.media import write_clip
from curation.probe import ProbeResult
from curation.quality import (
    FrameStats,
    frame_stats,
    hist_distance,
    motion,
    sharpness,
    sharpness_y,
    signature,
    yuv_stats,
)
from curation.report import save_thumb

# Frame times are floats from integer pts; this absorbs their rounding.
_EPS = 1e-6
# A slot showing a stored frame this many source periods after its time is a repeat the
# container asked for (AVI "dropped" entries), not a frame of its own.
_HELD_PERIODS = 1.5


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


def segment_source(
    info: ProbeResult, plan: Plan, cfg: CurationConfig, clips_dir: Path, name: ClipNamer
) -> list[Segment]:
    """Every segment of `info`'s file, kept ones written to `clips_dir/<id>.mp4`.

    Damaged video spans and a cut tail become segment records; raises `Damaged` (after
    deleting what it wrote) only when no clip at all could be kept from a damaged file.
    """
    if info.still:
        return [_still_segment(info, plan, cfg, clips_dir, name)]
    cutter = _Cutter(info, plan, cfg, clips_dir, name)
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
        tail = Segment(cutter.scene, len(cutter.segments), -1, cut, round(info.duration_s, 6), {})
        tail.reason = "truncated"
        tail.detail = truncated_detail(cut, info.duration_s, "the clips before the cut are kept")
        cutter.segments.append(tail)
    return cutter.segments


def time_slots(
    frames: Iterable[av.VideoFrame | None], fps: float, src_fps: float
) -> Iterator[tuple[int, av.VideoFrame | None, float]]:
    """(slot n, the source frame on screen at slot time or None where damage hid it, that time
    in source seconds).

    Slot n is at t0 + n/fps: a constant-rate grid over a constant- or variable-rate source.
    A stored frame stays on screen until the next one (repeat-frame containers rely on it);
    after a damaged stretch (a None in `frames`) only for one source period.
    """
    held: av.VideoFrame | None = None
    held_t = t0 = 0.0
    n, gap = 0, False
    for i, frame in enumerate(frames):
        if frame is None:
            gap = True
            continue
        t = frame.time if frame.time is not None else i / src_fps
        if held is None:
            t0 = t
        shown_until = held_t + 1 / src_fps if gap else math.inf
        while held is not None and n / fps < t - t0 - _EPS:
            yield n, (held if n / fps < shown_until - _EPS else None), t0 + n / fps
            n += 1
        held, held_t, gap = frame, t - t0, False
    # Past the last frame: it stays on screen for one source frame period.
    while held is not None and n / fps < held_t + 1 / src_fps - _EPS:
        yield n, held, t0 + n / fps
        n += 1


def quality_reason(
    lumas: list[float], motions: list[float], sharp: float, cfg: CurationConfig, still: bool
) -> tuple[str, str] | None:
    """(reason, detail) when a segment is black, frozen or blurred; None when it is usable."""
    f = cfg.filters
    dark = sum(lu < f.black_luma for lu in lumas) / len(lumas)
    if dark >= f.black_fraction:
        return "black", f"{dark:.0%} of frames darker than luma {f.black_luma:g}"
    moved = float(np.mean(motions)) if motions else 0.0
    if not still and moved < f.frozen_motion:
        return "frozen", f"mean change {moved:.2f} levels/frame (< {f.frozen_motion:g})"
    if sharp < f.blur_sharpness:
        return "blurry", f"sharpness {sharp:.1f} (< {f.blur_sharpness:g})"
    return None


class _Cutter:
    """State of one source's pass: current scene, the segment being filled, segments so far."""

    def __init__(
        self, info: ProbeResult, plan: Plan, cfg: CurationConfig, clips_dir: Path, name: ClipNamer
    ) -> None:
        self.info, self.plan, self.cfg, self.clips_dir, self.name = info, plan, cfg, clips_dir, name
        self.convert = yuv_converter(info, plan.bucket, plan.box)
        self.segments: list[Segment] = []
        self.log = DecodeLog()
        self.t0: float | None = None  # source time of the first good frame
        self.scene = 0
        self.scene_start = 0
        self._last = -1
        self._frame: av.VideoFrame | None = None
        self._arr: av.VideoFrame | None = None  # the bucket frame of `_frame`
        self._stats: FrameStats | None = None
        self._damage: Segment | None = None  # the damaged-span record still growing
        self._reset()
        self._audio: AudioCursor | None = None
        self._audio_error = ""

    def run(self) -> None:
        """Decode the file once, video and audio each from their own demuxer."""
        sc = self.cfg.scenes
        self._limit = math.inf if sc.max_scene_s is None else round(sc.max_scene_s * self.plan.fps)
        self._src_fps = self.info.fps or self.plan.fps
        if self.info.has_audio:
            self._open_audio()
        try:
            with av.open(str(self.info.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # frame threads: the decode is most of the cost
                frames = video_frames(container, stream, self.log)
                for slot, frame, t in time_slots(frames, self.plan.fps, self._src_fps):
                    if not self._buf and self._no_room_after(slot):
                        break
                    self._add(slot, frame, t)
            self._end_scene(None)
        finally:
            if self._audio is not None:
                self._audio.close()

    def _no_room_after(self, slot: int) -> bool:
        """No whole clip can start here: the stored frames end first. Decoding stops (the
        tail can give no clip); the scene is still measured to the end of the video."""
        end, fps = self.info.video_end_s, self.plan.fps
        if not end or (slot + self.plan.frames - 1) / fps < end + 1 / self._src_fps:
            return False
        self._last = max(self._last, math.ceil(end * fps - _EPS) - 1)
        return True

    def cut_at(self) -> float | None:
        """Where the video stops, when the file is cut short (seconds from its first frame)."""
        if self.info.truncated_at is not None:
            return self.info.truncated_at
        if self.t0 is None or self.log.end_s is None or not self.log.stopped:
            return None
        end, listed = self.log.end_s - self.t0, self.info.duration_s
        return round(end, 3) if end < listed - max(2 / self._src_fps, 0.02 * listed) else None

    def _open_audio(self) -> None:
        """A stream that cannot even be opened costs the audio, never the video."""
        rate, channels = self.cfg.audio_sample_rate, self.cfg.audio_channels
        try:
            self._audio = AudioCursor(self.info.path, rate, channels)
        except (av.FFmpegError, OSError, EOFError, ValueError) as e:
            self._audio_error = one_line(e)

    def discard(self) -> None:
        for seg in self.segments:
            if seg.clip_id:
                (self.clips_dir / f"{seg.clip_id}.mp4").unlink(missing_ok=True)
        self.segments = []

    def _reset(self) -> None:
        self._buf: list[av.VideoFrame] = []
        self._lumas: list[float] = []
        self._motions: list[float] = []
        self._start: tuple[int, float] = (0, 0.0)
        self._held = 0  # slots showing a repeat the container asked for

    def _add(self, slot: int, frame: av.VideoFrame | None, t: float) -> None:
        self._last = slot
        if frame is None:
            self._damaged(slot, t)
            return
        self._damage = None
        if self.t0 is None:
            self.t0 = t
        if frame is not self._frame:
            arr = self.convert(frame)
            stats = yuv_stats(*planes(arr))
            prev, self._frame, self._arr, self._stats = self._stats, frame, arr, stats
            sc = self.cfg.scenes
            if prev is not None and sc.detect and hist_distance(prev, stats) > sc.cut_threshold:
                self._end_scene(slot)
            elif prev is not None and self._buf:
                self._motions.append(motion(prev, stats))
        assert self._arr is not None and self._stats is not None
        in_scene = slot - self.scene_start
        cap = self.cfg.scenes.max_clips_per_scene
        if in_scene >= self._limit or (cap is not None and self._scene_clips() >= cap):
            return
        if not self._buf:
            self._start = (slot, t)
        self._buf.append(self._arr)
        self._lumas.append(self._stats.luma)
        if frame.time is not None and t - frame.time > _HELD_PERIODS / self._src_fps:
            self._held += 1
        if len(self._buf) == self.plan.frames:
            self._emit()

    def _damaged(self, slot: int, t: float) -> None:
        """A slot with no trustworthy picture: the partial segment around it is dropped."""
        if self._damage is None:
            start = self._start[1] if self._buf else t
            self._damage = Segment(self.scene, len(self.segments), slot, round(start, 6), 0.0, {})
            self._damage.reason = "damaged_video"
            self.segments.append(self._damage)
            self._reset()
        seg = self._damage
        seg.end_s = round(t + 1 / self.plan.fps, 6)
        seg.detail = (
            f"video at {seg.start_s:.2f}-{seg.end_s:.2f} s is damaged ({self.log.first_error}); "
            "that span is dropped, the rest of the file is kept"
        )

    def _scene_clips(self) -> int:
        return sum(s.scene == self.scene for s in self.segments)

    def _end_scene(self, next_start: int | None) -> None:
        """Close the scene (the partial segment is dropped); mark it short if it was."""
        end = next_start if next_start is not None else self._last + 1
        length_s = (end - self.scene_start) / self.plan.fps
        if length_s < self.cfg.scenes.min_scene_s:
            for seg in self.segments:
                if seg.scene == self.scene and seg.reason is None:
                    (self.clips_dir / f"{seg.clip_id}.mp4").unlink(missing_ok=True)
                    seg.reason, seg.clip_id, seg.phash = "short_scene", None, []
                    seg.detail = f"scene lasts {length_s:.2f} s (< {self.cfg.scenes.min_scene_s:g})"
        self._reset()
        if next_start is not None:
            self.scene, self.scene_start = self.scene + 1, next_start

    def _emit(self) -> None:
        slot, t = self._start
        seconds = self.plan.frames / self.plan.fps
        chosen = (self._buf[0], self._buf[len(self._buf) // 2], self._buf[-1])
        sharp = float(np.median([sharpness_y(planes(f)[0]) for f in chosen]))
        quality = {
            "luma": round(float(np.mean(self._lumas)), 2),
            "motion": round(float(np.mean(self._motions)) if self._motions else 0.0, 3),
            "sharpness": round(sharp, 2),
        }
        seg = Segment(
            self.scene, len(self.segments), slot, round(t, 6), round(t + seconds, 6), quality
        )
        verdict = quality_reason(self._lumas, self._motions, sharp, self.cfg, still=False)
        if verdict is not None:
            seg.reason, seg.detail = verdict
        else:
            audio, seg.repairs = self._take_audio(t, seconds)
            if self._held:
                seg.repairs.append(_held_note(self._held, len(self._buf)))
            seg.clip_id = self.name(slot)
            _write(self.clips_dir / f"{seg.clip_id}.mp4", self._buf, audio, self.cfg)
            picks = [to_rgb(f) for f in chosen]
            seg.phash = [signature(p) for p in picks]
            save_thumb(picks[1], self.clips_dir.parent, seg.clip_id)
        self.segments.append(seg)
        self._reset()

    def _take_audio(self, t: float, seconds: float) -> tuple[np.ndarray | None, list[dict]]:
        """The clip's audio, or None and why when damage touches its window."""
        if not self.info.has_audio:
            return None, []
        if self._audio is not None:
            try:
                samples = self._audio.take(t, seconds)
            except (av.FFmpegError, ValueError) as e:  # the resampler gave up: no more audio
                self._audio.close()
                self._audio, self._audio_error = None, one_line(e)
            else:
                spans = self._audio.damaged(t, t + seconds)
                if not spans:
                    return samples, []
                where = ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in spans)
                why = f"damaged audio at {where} ({self._audio.log.first_error})"
                return None, [{"what": "audio", "action": "dropped", "detail": why}]
        why = f"the audio stream cannot be decoded ({self._audio_error})"
        return None, [{"what": "audio", "action": "dropped", "detail": why}]


def _held_note(held: int, frames: int) -> dict[str, str]:
    return {
        "what": "video",
        "action": "held",
        "detail": f"{held} of {frames} frames repeat the previous stored frame, as the "
        "container's timestamps ask (repeat-frame entries)",
    }


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
    _write(clips_dir / f"{seg.clip_id}.mp4", [arr], None, cfg)
    seg.phash = [signature(arr)] * 3
    return seg


def still_frame(info: ProbeResult, plan: Plan) -> np.ndarray:
    """A still, upright per its EXIF orientation, cropped and scaled to the bucket."""
    with Image.open(info.path) as img:
        upright = ImageOps.exif_transpose(img).convert("RGB")
    return np.asarray(upright.resize(plan.bucket, Image.Resampling.BICUBIC, box=plan.box))


def _write(
    dest: Path,
    frames: list[av.VideoFrame] | list[np.ndarray],
    audio: np.ndarray | None,
    cfg: CurationConfig,
) -> None:
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
