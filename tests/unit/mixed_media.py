"""Files in the containers and codecs of camera, phone, screen-capture and broadcast footage,
written here with FFmpeg's own encoders (tests build their media; nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

# (video codec, container, audio codec, pixel format)
MIXED = [
    ("libx264", "mp4", "aac", "yuv420p"),  # phones, most cameras
    ("mjpeg", "avi", "mp3", "yuvj420p"),  # webcams, old compacts
    ("mpeg2video", "mpegts", "mp2", "yuv420p"),  # broadcast, HDV
    ("mpeg2video", "vob", "ac3", "yuv420p"),  # DVD
    ("libx265", "matroska", "ac3", "yuv420p"),  # screen recorders, archives
    ("libvpx-vp9", "webm", "libopus", "yuv420p"),  # browser captures
    ("prores_ks", "mov", "pcm_s16le", "yuv422p10le"),  # editing masters
]
SUFFIX = {"mpegts": "ts", "matroska": "mkv"}


def write_mixed(path: Path, vcodec: str, fmt: str, acodec: str, pix: str, frames: int = 20,
                size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:  # fmt: skip
    """`frames` frames at 25 fps of scrolling colour cells (unique per `seed`) and a 440 Hz
    stereo tone as long as the video, in the given codecs and container."""
    w, h = size
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 255, (h // 8 + 2, w // 8 + 2 + frames, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(cells, 8, 0), 8, 1)
    t = np.arange(round(frames / 25 * 48000)) / 48000
    tone = np.repeat((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], 2, 0)
    with av.open(str(path), "w", format=fmt) as c:
        quiet = {"x265-params": "log-level=error"} if vcodec == "libx265" else {}
        video = c.add_stream(vcodec, rate=25, options=quiet)
        video.width, video.height, video.pix_fmt = w, h, pix
        audio = c.add_stream(acodec, rate=48000, layout="stereo")
        for i in range(frames):
            arr = np.ascontiguousarray(big[:h, 2 * i : 2 * i + w])
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format=pix)
            frame.pts = i
            c.mux(video.encode(frame))
        c.mux(video.encode(None))
        sound = av.AudioFrame.from_ndarray(tone, format="fltp", layout="stereo")
        sound.sample_rate, sound.pts = 48000, 0
        c.mux(audio.encode(sound))  # the encoder cuts it into its own frame size and format
        c.mux(audio.encode(None))
    return path
