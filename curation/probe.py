"""What a media file holds, read with PyAV (or Pillow for stills); bad media is a typed failure."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from curation.decode import DecodeLog, open_input, truncated_detail, video_frames
from curation.mpeg_framing import PROGRAM, TRANSPORT, stops_mid_packet
from stagekit.hashing import sha256_file

Box = tuple[float, float, float, float]  # left, top, right, bottom in display pixels

# Keyframes are cheap to decode and spread over the clip: enough to tell bars from dark scenes.
_LETTERBOX_KEYFRAMES = 12
_LETTERBOX_WIDTH = 320
# Frame intervals that differ by more than this fraction from the median mark variable rate.
_VFR_TOLERANCE = 0.1


@dataclass(frozen=True)
class ProbeResult:
    """Facts of a readable video or still. `width`/`height` are as stored; see `display_size`."""

    path: Path
    sha256: str
    container: str
    video_codec: str
    fps: float
    frames: int
    duration_s: float
    width: int
    height: int
    rotation: int  # degrees counter-clockwise a player turns the frame: 0, 90, 180 or 270
    has_audio: bool
    audio_sample_rate: int | None
    audio_channels: int | None
    vfr: bool = False  # frame intervals vary (phones, screen recordings)
    # Stored frames per second of timeline: below `fps` when the container repeats frames
    # (AVI "dropped" entries) or the rate varies.
    effective_fps: float = 0.0
    truncated_at: float | None = None  # the file is cut: video readable up to here (seconds)
    video_end_s: float = 0.0  # the last stored frame's end, from packet times (0: unknown)
    still: bool = False
    content_box: Box | None = None  # the picture inside letterbox/pillarbox bars, display pixels

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as a player shows it, after rotation."""
        turned = self.rotation in (90, 270)
        return (self.height, self.width) if turned else (self.width, self.height)


@dataclass(frozen=True)
class ProbeFailure:
    """A file with no usable picture. `reason`: undecodable, truncated, no_video_stream."""

    path: Path
    sha256: str
    reason: str
    detail: str


def probe(
    path: Path, letterbox_luma: float | None = None, sha256: str | None = None
) -> ProbeResult | ProbeFailure:
    """Open `path`, decode its first frame, read stream facts; never raises on bad media.

    With `letterbox_luma`, also find black bars (rows/columns darker than it in every keyframe).
    `sha256`: the file's hash when the caller has just computed it (else it is read here).
    """
    path = Path(path)
    sha = sha256 or sha256_file(path)
    try:
        with open_input(path) as container:
            return _inspect(container, path, sha, letterbox_luma)
    except (av.FFmpegError, OSError, EOFError, ValueError) as e:
        return ProbeFailure(path, sha, "undecodable", _one_line(e))


def probe_still(
    path: Path, letterbox_luma: float | None = None, sha256: str | None = None
) -> ProbeResult | ProbeFailure:
    """A jpg/png/webp as a 1-frame clip, upright per its EXIF orientation."""
    path = Path(path)
    sha = sha256 or sha256_file(path)
    try:
        with Image.open(path) as img:
            fmt = img.format or "image"
            upright = ImageOps.exif_transpose(img).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        return ProbeFailure(path, sha, "undecodable", _one_line(e))
    w, h = upright.size
    info = ProbeResult(path, sha, fmt.lower(), fmt.lower(), 0.0, 1, 0.0, w, h, 0, False, None, None)
    info = _replace(info, still=True)
    if letterbox_luma is not None:
        info = _with_box(info, bars_box(_gray(upright)[None], letterbox_luma))
    return info


def _inspect(
    container: av.container.InputContainer, path: Path, sha: str, letterbox_luma: float | None
) -> ProbeResult | ProbeFailure:
    if not container.streams:  # what a truncated mp4 without its index opens as
        return ProbeFailure(path, sha, "undecodable", "no streams found: truncated or not media")
    if not container.streams.video:
        return ProbeFailure(path, sha, "no_video_stream", "the file has no video stream")
    stream = container.streams.video[0]
    scan, keys = _scan_packets(container, stream, path.stat().st_size, letterbox_luma)
    log = DecodeLog()
    first = keys[0] if keys else _first_frame(path, log)
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    # The listed length: an AVI's frame count includes its repeat entries (and survives a cut).
    listed = stream.frames / fps if stream.frames and fps else 0.0
    duration = max(_duration(container, stream), listed)
    if container.format.name in (PROGRAM, TRANSPORT):
        # Their length is estimated from timestamps near the end and can fall short of the
        # packets' own span.
        duration = max(duration, scan.end_s)
    cut = _cut_at(scan, path, container.format.name, duration, fps)
    if first is None:
        return _no_frame(path, sha, log, cut, duration)
    box = _letterbox(keys, first.rotation, letterbox_luma) if letterbox_luma is not None else None
    frames = scan.count or stream.frames
    fps = fps or (frames / duration if duration else 0.0)
    duration = duration or (frames / fps if fps else 0.0)
    audio = container.streams.audio[0] if container.streams.audio else None
    return ProbeResult(
        path=path,
        sha256=sha,
        container=container.format.name,
        video_codec=stream.codec_context.name,
        fps=fps,
        frames=frames,
        duration_s=duration,
        width=first.width,
        height=first.height,
        rotation=round(first.rotation / 90) % 4 * 90,
        has_audio=audio is not None,
        audio_sample_rate=audio.codec_context.sample_rate if audio else None,
        audio_channels=audio.codec_context.channels if audio else None,
        vfr=scan.vfr,
        effective_fps=round(scan.count / duration, 4) if duration else fps,
        truncated_at=cut,
        video_end_s=round(scan.end_s, 6),
        content_box=box,
    )


def _cut_at(scan: _Scan, path: Path, container: str, listed_s: float, fps: float) -> float | None:
    """Where a cut file stops: short of the length its container lists, or, for MPEG-PS/TS,
    which list none, inside a packet (then at the end of the last whole video packet)."""
    cut = scan.truncated_at(listed_s, fps)
    if cut is None and stops_mid_packet(path, container):
        cut = round(max(0.0, scan.end_s), 3)
    return cut


def _no_frame(
    path: Path, sha: str, log: DecodeLog, cut: float | None, listed_s: float
) -> ProbeFailure:
    """Why no picture decodes: the file is cut before one, or its video is damaged."""
    why = log.first_error or log.stopped
    if cut is not None:
        detail = truncated_detail(cut, listed_s, "nothing before the cut decodes")
        return ProbeFailure(path, sha, "truncated", detail)
    return ProbeFailure(path, sha, "undecodable", f"no video frame could be decoded {why}".strip())


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    # The stream's own duration first: the container's includes a longer audio track.
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else 0.0


@dataclass(frozen=True)
class _Scan:
    """The video packets' facts, from a demux without decoding."""

    count: int
    vfr: bool
    end_s: float  # end of the last readable frame (its time + one median interval)
    stopped: bool  # the demuxer raised before a clean end
    tail: int  # bytes of the file after the last readable packet
    largest: int  # the largest packet's size

    def truncated_at(self, listed_s: float, fps: float) -> float | None:
        """Where a cut file stops, or None when it reads to the end it lists.

        Short of the listed length alone is not enough (a complete AVI may end on repeat
        entries): the data must also stop within about one packet of the end of the file.
        """
        slack = max(2 / fps if fps else 0.0, 0.02 * listed_s)
        near_eof = self.stopped or self.tail <= max(self.largest, 4096)
        if listed_s and self.end_s < listed_s - slack and near_eof:
            return round(max(0.0, self.end_s), 3)
        return None


def _scan_packets(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    size: int,
    luma: float | None,
) -> tuple[_Scan, list[av.VideoFrame]]:
    """One demux of the video: every packet's timing and position, and the keyframes needed:
    the first (the first frame's facts) and, with `luma`, up to a dozen for the letterbox.
    Nothing else is decoded."""
    stream.codec_context.skip_frame = "NONKEY"
    stream.codec_context.thread_count = 1  # a few lone keyframes: threads would cost more
    pts: list[float] = []
    keys: list[av.VideoFrame] = []
    stopped, end_pos, largest = False, 0, 0
    packets = container.demux(stream)
    while True:
        try:
            p = next(packets)
        except StopIteration:
            break
        except av.FFmpegError:
            stopped = True
            break
        if p.size and p.pts is not None and p.time_base is not None:
            pts.append(float(p.pts * p.time_base))
            end_pos, largest = max(end_pos, (p.pos or 0) + p.size), max(largest, p.size)
        if p.is_keyframe and _more_keyframes(keys, luma):
            keys += _keyframe(p, stream)
    if _more_keyframes(keys, luma):
        keys += _decoded(None, stream)  # what the decoder still holds (reordering delay)
    pts.sort()
    steps = np.diff(np.asarray(pts, np.float64)) if len(pts) > 1 else np.zeros(0)
    median = float(np.median(steps)) if steps.size else 0.0
    vfr = len(pts) >= 3 and median > 0
    vfr = vfr and float(np.max(np.abs(steps - median))) > _VFR_TOLERANCE * median
    end = pts[-1] - pts[0] + median if pts else 0.0
    return _Scan(len(pts), bool(vfr), end, stopped, size - end_pos, largest), keys


def _more_keyframes(keys: list[av.VideoFrame], luma: float | None) -> bool:
    """Whether another keyframe could change what the probe reports.

    Once every edge is brighter than `luma` in some keyframe there can be no bars (more
    frames only add brightness): most footage needs one keyframe, not a dozen.
    """
    if not keys:
        return True
    if luma is None or len(keys) >= _LETTERBOX_KEYFRAMES:
        return False
    bright = np.stack([_small_gray(f) for f in keys if f.width == keys[0].width]).max(0) > luma
    rows, cols = bright.any(axis=1), bright.any(axis=0)
    ny, nx = (math.ceil(max(1, 0.02 * n)) for n in bright.shape)  # bars_box's smallest bar
    edges = (rows[:ny], rows[-ny:], cols[:nx], cols[-nx:])
    return not all(edge.any() for edge in edges)


def _keyframe(packet: av.Packet, stream: av.video.stream.VideoStream) -> list[av.VideoFrame]:
    """The picture of one keyframe packet, now. A decoder with a reordering delay (B-frames)
    holds it back until more packets come, and those would be more keyframes to decode, each
    a whole full-size picture: the decoder is drained instead, then reset for the next one."""
    frames = _decoded(packet)
    if not frames:
        frames = _decoded(None, stream)
        stream.codec_context.flush_buffers()
    return frames


def _decoded(
    packet: av.Packet | None, stream: av.video.stream.VideoStream | None = None
) -> list[av.VideoFrame]:
    try:
        frames = packet.decode() if packet is not None else stream.codec_context.decode(None)
        return [f for f in frames if not f.is_corrupt]
    except av.FFmpegError:
        return []  # a damaged keyframe: segmenting reports the damage


def _first_frame(path: Path, log: DecodeLog) -> av.VideoFrame | None:
    """The first frame that decodes at all, for streams whose keyframes are not flagged."""
    with open_input(path) as container:
        frames = video_frames(container, container.streams.video[0], log)
        return next((f for f in frames if f is not None), None)


def _letterbox(keys: list[av.VideoFrame], rotation: int, luma: float) -> Box | None:
    """The picture inside black bars, from up to a dozen keyframes (None: no bars)."""
    if not keys:
        return None
    k = round(rotation / 90) % 4
    grays = [np.rot90(_small_gray(f), k=k) for f in keys if f.width == keys[0].width]
    box = bars_box(np.stack(grays), luma)
    if box is None:
        return None
    full = (keys[0].width, keys[0].height)
    disp = full if k % 2 == 0 else (full[1], full[0])
    sx, sy = disp[0] / grays[0].shape[1], disp[1] / grays[0].shape[0]
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def _small_gray(frame: av.VideoFrame) -> np.ndarray:
    scale = min(1.0, _LETTERBOX_WIDTH / frame.width)
    small = frame.reformat(
        width=max(2, round(frame.width * scale)),
        height=max(2, round(frame.height * scale)),
        format="gray",
        interpolation="AREA",
    )
    return small.to_ndarray()


def bars_box(grays: np.ndarray, luma: float) -> Box | None:
    """Bounds of the rows/columns that are brighter than `luma` somewhere in `[N, H, W]` frames.

    None when there are no bars worth cropping (under 2% a side) or the picture would vanish.
    """
    bright = grays.max(axis=0) > luma
    rows, cols = np.flatnonzero(bright.any(axis=1)), np.flatnonzero(bright.any(axis=0))
    h, w = bright.shape
    if rows.size == 0 or cols.size == 0:
        return None  # all dark: a black clip, which the black filter reports
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    min_y, min_x = max(1, 0.02 * h), max(1, 0.02 * w)
    top, bottom = (top if top >= min_y else 0), (bottom if h - bottom >= min_y else h)
    left, right = (left if left >= min_x else 0), (right if w - right >= min_x else w)
    if (top, bottom, left, right) == (0, h, 0, w):
        return None
    if (bottom - top) < 0.4 * h or (right - left) < 0.4 * w:
        return None  # mostly dark footage, not bars: keep the whole frame
    return (float(left), float(top), float(right), float(bottom))


def _gray(img: Image.Image) -> np.ndarray:
    scale = min(1.0, _LETTERBOX_WIDTH / img.width)
    small = img.convert("L").resize(
        (max(2, round(img.width * scale)), max(2, round(img.height * scale)))
    )
    return np.asarray(small)


def _with_box(info: ProbeResult, box: Box | None) -> ProbeResult:
    if box is not None and info.still:
        scale = info.width / _gray_width(info.width)
        box = (box[0] * scale, box[1] * scale, box[2] * scale, box[3] * scale)
    return _replace(info, content_box=box)


def _gray_width(width: int) -> int:
    return max(2, round(width * min(1.0, _LETTERBOX_WIDTH / width)))


def _replace(info: ProbeResult, **changes: object) -> ProbeResult:
    return replace(info, **changes)


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
