"""One sequential decode of a source: scene cuts, training-length segments, their quality, clips.

Frames are resampled by time to the target fps, cropped and scaled to the bucket as they are
decoded, measured, and encoded a segment at a time: memory holds one segment, never a source.
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np

from curation.config import CurationConfig
from curation.decode import AudioCursor, DecodeLog, one_line, open_input, video_frames
from curation.frames import planes, to_rgb, yuv_converter
from curation.probe import ProbeResult
from curation.quality import (
    FrameStats,
    hist_distance,
    motion,
    quality_reason,
    sharpness_y,
    signature,
    yuv_stats,
)
from curation.report import save_thumb
from curation.segment_types import ClipNamer, Plan, Segment, write_segment
from curation.timeline import EPS, time_slots

# A slot showing a stored frame this many source periods after its time is a repeat the
# container asked for (AVI "dropped" entries), not a frame of its own.
_HELD_PERIODS = 1.5


class Cutter:
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
            with open_input(self.info.path) as container:
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
        self._last = max(self._last, math.ceil(end * fps - EPS) - 1)
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
            write_segment(self.clips_dir / f"{seg.clip_id}.mp4", self._buf, audio, self.cfg)
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
