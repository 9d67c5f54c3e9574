"""Reading and writing clips with PyAV: time-resampled frame windows, resampled audio, h264+AAC."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Frame times are floats from integer pts; this absorbs their rounding.
_EPS = 1e-6


class ShortRead(Exception):
    """The stream ended before the requested window was filled (a truncated file, usually)."""

    def __init__(self, got: int, wanted: int) -> None:
        super().__init__(f"decoded only {got} of {wanted} frames")
        self.got, self.wanted = got, wanted


def as_rate(fps: float) -> Fraction:
    """24 -> 24/1, 23.976 -> 24000/1001: the exact rate a container can store."""
    return Fraction(fps).limit_denominator(1001)


def read_frames(
    path: Path,
    count: int,
    fps: float,
    src_fps: float,
    convert: Callable[[av.VideoFrame], np.ndarray],
) -> tuple[list[np.ndarray], float]:
    """The first `count` frames at `fps`, each the source frame on screen at that time.

    Decodes sequentially (cheap for any GOP) and converts each used source frame once.
    Returns the frames `[H, W, 3]` uint8 and the source time of the first frame (seconds).
    """
    out: list[np.ndarray] = []
    held: av.VideoFrame | None = None
    held_arr: np.ndarray | None = None
    held_t = t0 = 0.0
    with av.open(str(path)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            t = frame.time if frame.time is not None else n / src_fps
            if held is None:
                t0 = t
            while held is not None and len(out) < count and len(out) / fps < t - t0 - _EPS:
                held_arr = convert(held) if held_arr is None else held_arr
                out.append(held_arr)
            if len(out) == count:
                return out, t0
            held, held_arr, held_t = frame, None, t - t0
    # Past the last frame: it stays on screen for one source frame period.
    while held is not None and len(out) < count and len(out) / fps < held_t + 1 / src_fps - _EPS:
        held_arr = convert(held) if held_arr is None else held_arr
        out.append(held_arr)
    if len(out) < count:
        raise ShortRead(len(out), count)
    return out, t0


def read_audio(
    path: Path, start_s: float, duration_s: float, rate: int, channels: int
) -> np.ndarray:
    """Audio from `start_s` (source seconds) for `duration_s`, as float32 `[channels, samples]`.

    Resampled to `rate`; a mono source is duplicated into every channel, a gap is silence.
    """
    want = round(duration_s * rate)
    chunks: list[np.ndarray] = []
    first_t: float | None = None
    with av.open(str(path)) as container:
        src = container.streams.audio[0]
        layout = "mono" if src.codec_context.channels == 1 else ("mono", "stereo")[channels - 1]
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        got = 0
        for frame in container.decode(src):
            if first_t is None:
                first_t = frame.time if frame.time is not None else 0.0
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
                got += out.samples
            if got >= want + round((start_s - first_t) * rate):
                break
        else:
            chunks += [out.to_ndarray() for out in resampler.resample(None)]
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)
    offset = round(((first_t or 0.0) - start_s) * rate)  # >0: audio starts after the video
    samples = np.pad(samples, ((0, 0), (offset, 0))) if offset > 0 else samples[:, -offset:]
    samples = np.pad(samples[:, :want], ((0, 0), (0, max(0, want - samples.shape[1]))))
    if samples.shape[0] != channels:
        samples = np.repeat(samples[:1], channels, axis=0)
    return samples.astype(np.float32)


def write_clip(
    path: Path,
    frames: Sequence[np.ndarray],
    fps: float,
    *,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    gop: int = 8,
    crf: int = 18,
    preset: str = "medium",
) -> None:
    """Encode `[H, W, 3]` uint8 frames as h264 yuv420p (+ AAC from `[channels, samples]`) mp4.

    One encoder thread: the bytes then depend only on the inputs, not on the machine's cores.
    """
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream(
            "libx264",
            rate=as_rate(fps),
            options={
                "crf": str(crf),
                "g": str(gop),
                "keyint_min": str(gop),
                "preset": preset,
                "threads": "1",
                # Without it x264's lookahead makes the bytes vary from run to run on a busy
                # machine (measured: up to 10 variants in 25 encodes); with it none did.
                "tune": "zerolatency",
            },
        )
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = None
        if audio is not None:
            layout = ("mono", "stereo")[audio.shape[0] - 1]
            sound = container.add_stream("aac", rate=sample_rate, layout=layout)
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None and audio is not None:
            _encode_audio(container, sound, audio, sample_rate)


def _encode_audio(
    container: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    audio: np.ndarray,
    rate: int,
) -> None:
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(audio, dtype=np.float32), format="fltp", layout=stream.layout.name
    )
    frame.sample_rate, frame.pts = rate, 0
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


class AudioCursor:
    """Streams a file's audio, resampled, for windows asked in increasing time order.

    Holds only the samples not yet handed out, so memory does not grow with the file's length.
    """

    def __init__(self, path: Path, rate: int, channels: int) -> None:
        self._container = av.open(str(path))
        src = self._container.streams.audio[0]
        layout = "mono" if src.codec_context.channels == 1 else ("mono", "stereo")[channels - 1]
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self._frames = self._container.decode(src)
        self.rate, self.channels = rate, channels
        self._buf = np.zeros((1 if layout == "mono" else 2, 0), np.float32)
        self._buf_start = 0  # sample index of _buf[:, 0], counted from the first audio frame
        self._first_t: float | None = None
        self._done = False
        self._pull()

    def take(self, start_s: float, duration_s: float) -> np.ndarray:
        """`[channels, round(duration_s * rate)]` float32 from source time `start_s`; gaps are
        silence."""
        first = self._first_t or 0.0
        begin = round((start_s - first) * self.rate)
        end = begin + round(duration_s * self.rate)
        while not self._done and self._buf_start + self._buf.shape[1] < end:
            self._pull()
        lo, hi = max(begin, self._buf_start), min(end, self._buf_start + self._buf.shape[1])
        out = np.zeros((self._buf.shape[0], end - begin), np.float32)
        if hi > lo:
            out[:, lo - begin : hi - begin] = self._buf[
                :, lo - self._buf_start : hi - self._buf_start
            ]
        keep = max(0, begin - self._buf_start)  # later windows start at or after this one
        self._buf, self._buf_start = self._buf[:, keep:], self._buf_start + keep
        return np.repeat(out[:1], self.channels, axis=0) if out.shape[0] != self.channels else out

    def close(self) -> None:
        self._container.close()

    def _pull(self) -> None:
        frame = next(self._frames, None)
        if frame is None:
            chunks = [o.to_ndarray() for o in self._resampler.resample(None)]
            self._done = True
        else:
            if self._first_t is None:
                self._first_t = frame.time if frame.time is not None else 0.0
            chunks = [o.to_ndarray() for o in self._resampler.resample(frame)]
        if chunks:
            self._buf = np.concatenate([self._buf, *chunks], axis=1).astype(np.float32)
