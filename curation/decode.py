"""Decoding by stream and by packet: a bad packet costs its own span, never the whole stream.

Video and audio are read from separate demuxers, so damage in one never stops the other.
A video packet that fails to decode marks the frames until the next keyframe as damaged
(they may reference the lost picture); audio lost to a bad packet becomes silence up to the
next good frame's timestamp, so later audio stays in sync, and its span is listed for the
clips it touches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

Span = tuple[float, float]  # seconds, source time

# While a file is opened, FFmpeg's stream-info search decodes a first picture to fill in
# facts the headers and parsers already give; that one 1080p decode was a third of the
# probe's time. Its decoders are its own: the streams' decoders are unaffected.
_NO_PICTURES = {"skip_frame": "all"}


def open_input(path: Path) -> av.container.InputContainer:
    """`av.open(path)` for reading, without decoding a picture while opening."""
    return av.open(str(path), options=_NO_PICTURES)


@dataclass
class DecodeLog:
    """What went wrong while reading one stream: damaged spans and why reading stopped."""

    damaged: list[Span] = field(default_factory=list)
    first_error: str = ""
    stopped: str = ""  # the demuxer's error when it could read no further ("" = clean end)
    end_s: float | None = None  # end of the last good frame (time + one period)

    def note(self, span: Span, error: Exception) -> None:
        if self.damaged and span[0] <= self.damaged[-1][1] + 1e-3:
            self.damaged[-1] = (self.damaged[-1][0], max(span[1], self.damaged[-1][1]))
        else:
            self.damaged.append(span)
        self.first_error = self.first_error or one_line(error)

    def overlaps(self, start_s: float, end_s: float) -> list[Span]:
        return [s for s in self.damaged if s[0] < end_s and s[1] > start_s]


def video_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, log: DecodeLog
) -> Iterator[av.VideoFrame | None]:
    """Decoded frames in order; None stands for one or more frames lost to damage.

    Frames after a failed packet are withheld (as None) until a keyframe: their picture may
    be built on the lost one. A demuxer error ends the stream (recorded in `log.stopped`).
    """
    period = 1 / float(stream.average_rate or stream.guessed_rate or 24)
    packets = container.demux(stream)
    broken = False
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as e:  # the container cannot be read past here
            log.stopped = one_line(e)
            return
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            t = _packet_time(packet)
            log.note((t, t + period) if t is not None else _after(log, period), e)
            broken = True
            yield None
            continue
        for frame in frames:
            broken = broken and not frame.key_frame
            if broken or frame.is_corrupt:
                t = frame.time if frame.time is not None else (log.end_s or 0.0)
                log.note((t, t + period), ValueError("picture depends on a damaged frame"))
                yield None
                continue
            if frame.time is not None:
                log.end_s = frame.time + period
            yield frame


def _packet_time(packet: av.Packet) -> float | None:
    if packet.pts is None or packet.time_base is None:
        return None
    return float(packet.pts * packet.time_base)


def _after(log: DecodeLog, period: float) -> Span:
    start = log.end_s or 0.0
    return (start, start + period)


class AudioCursor:
    """Streams a file's audio, resampled, for windows asked in increasing time order.

    Holds only the samples not yet handed out, so memory does not grow with the file's length.
    Audio lost to bad packets becomes silence up to the next good frame's timestamp (a damaged
    packet can take its neighbours with it); `log.damaged` lists the span.
    """

    def __init__(self, path: Path, rate: int, channels: int) -> None:
        self.log = DecodeLog()
        self._container = open_input(path)
        self._src = self._container.streams.audio[0]
        mono = self._src.codec_context.channels == 1
        layout = "mono" if mono else ("mono", "stereo")[channels - 1]
        self._new_resampler = lambda: av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self._resampler = self._new_resampler()
        self._packets = self._container.demux(self._src)
        self.rate, self.channels = rate, channels
        self._buf = np.zeros((1 if layout == "mono" else 2, 0), np.float32)
        self._buf_start = 0  # sample index of _buf[:, 0], counted from the first audio frame
        self._pending: list[np.ndarray] = []  # decoded after _buf, joined once per window
        self._pending_n = 0
        self._first_t: float | None = None
        self._lost_at: float | None = None  # source time of a bad packet not yet filled in
        self._error: Exception | None = None
        self._done = False
        self._pull()

    def take(self, start_s: float, duration_s: float) -> np.ndarray:
        """`[channels, round(duration_s * rate)]` float32 from source time `start_s`; gaps are
        silence."""
        first = self._first_t or 0.0
        begin = round((start_s - first) * self.rate)
        end = begin + round(duration_s * self.rate)
        while not self._done and self._end_sample() < end:
            self._pull()
        if self._pending:
            self._buf = np.concatenate([self._buf, *self._pending], axis=1)
            self._pending, self._pending_n = [], 0
        lo, hi = max(begin, self._buf_start), min(end, self._buf_start + self._buf.shape[1])
        out = np.zeros((self._buf.shape[0], end - begin), np.float32)
        if hi > lo:
            out[:, lo - begin : hi - begin] = self._buf[
                :, lo - self._buf_start : hi - self._buf_start
            ]
        keep = max(0, begin - self._buf_start)  # later windows start at or after this one
        self._buf, self._buf_start = self._buf[:, keep:], self._buf_start + keep
        return np.repeat(out[:1], self.channels, axis=0) if out.shape[0] != self.channels else out

    def damaged(self, start_s: float, end_s: float) -> list[Span]:
        """Damaged spans that touch `[start_s, end_s)` (call after `take` of that window)."""
        return self.log.overlaps(start_s, end_s)

    def close(self) -> None:
        self._container.close()

    def _pull(self) -> None:
        try:
            packet = next(self._packets, None)
        except av.FFmpegError as e:
            self.log.stopped, packet = one_line(e), None
        if packet is None:
            if self._lost_at is not None and self._error is not None:  # lost to the end
                self.log.note((self._lost_at, self._lost_at + 1 / self.rate), self._error)
            self._append([o.to_ndarray() for o in self._resampler.resample(None)])
            self._done = True
            return
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            t = _packet_time(packet)
            if self._lost_at is None:
                self._lost_at, self._error = (t if t is not None else self._end_time()), e
            if self._first_t is None:
                self._first_t = self._lost_at
            return
        for frame in frames:
            if self._first_t is None:
                self._first_t = frame.time if frame.time is not None else 0.0
            if self._lost_at is not None:
                self._fill_gap(frame)
            self._append([o.to_ndarray() for o in self._resampler.resample(frame)])

    def _fill_gap(self, frame: av.AudioFrame) -> None:
        """Silence from the lost packet to this frame's time keeps what follows in sync."""
        assert self._lost_at is not None and self._error is not None
        # Flush what the resampler holds back, so the count of samples out is exact.
        self._append([o.to_ndarray() for o in self._resampler.resample(None)])
        self._resampler = self._new_resampler()
        now = frame.time if frame.time is not None else self._end_time()
        self.log.note((self._lost_at, max(now, self._lost_at)), self._error)
        missing = round((now - (self._first_t or 0.0)) * self.rate) - self._end_sample()
        if missing > 0:
            self._append([np.zeros((self._buf.shape[0], missing), np.float32)])
        self._lost_at = None

    def _end_sample(self) -> int:
        return self._buf_start + self._buf.shape[1] + self._pending_n

    def _end_time(self) -> float:
        return (self._first_t or 0.0) + self._end_sample() / self.rate

    def _append(self, chunks: list[np.ndarray]) -> None:
        if chunks:
            self._pending += [c.astype(np.float32, copy=False) for c in chunks]
            self._pending_n += sum(c.shape[1] for c in chunks)


def truncated_detail(cut_s: float, listed_s: float, outcome: str) -> str:
    """How far a cut file decodes, for quarantine.jsonl."""
    if listed_s <= cut_s + 1e-3:  # MPEG-PS/TS: the length they list is where the data stops
        return (
            f"the file is cut inside a packet: its video decodes to {cut_s:.2f} s, where its "
            f"data stops; {outcome}"
        )
    share = f" ({cut_s / listed_s:.0%})" if listed_s else ""
    return (
        f"the file is cut: its video decodes to {cut_s:.2f} s of the {listed_s:.2f} s its "
        f"container lists{share}; {outcome}"
    )


def one_line(e: Exception) -> str:
    """An exception's message on one line (quarantine details are one line each)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
