"""Read the frames of a clip for encoding: decord when it is installed (random access by index,
resize on decode), PyAV otherwise. Both return the same RGB uint8 frames for our h264 clips.

decord 0.6.0 mis-sizes frames when asked to resize to a width that is not a multiple of 32
(dmlc/decord#336); bucket sides always are (the pipeline's own rule), and other sizes go
through PyAV.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stagekit.errors import UserError

BACKENDS = ("auto", "decord", "pyav")
DECORD_WIDTH_MULTIPLE = 32


def decord_available() -> bool:
    """True when `import decord` would succeed (it ships wheels for x86-64 Linux only)."""
    return importlib.util.find_spec("decord") is not None


def frame_backend(backend: str = "auto", width: int | None = None) -> str:
    """The reader `read_frames` uses: 'decord' or 'pyav'."""
    if backend not in BACKENDS:
        raise UserError(f"frame reader '{backend}' is not one of {', '.join(BACKENDS)}")
    width_ok = width is None or width % DECORD_WIDTH_MULTIPLE == 0
    if backend == "decord" and not decord_available():
        raise UserError("frame reader 'decord' is not installed: pip install decord==0.6.0")
    if backend == "auto":
        return "decord" if decord_available() and width_ok else "pyav"
    return "pyav" if backend == "decord" and not width_ok else backend


def read_frames(
    path: Path,
    indices: Sequence[int],
    size: tuple[int, int] | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """Frames `indices` of the clip as uint8 [F, H, W, 3], resized to `size` = (width, height)
    when given. Raises UserError when the clip has fewer frames than asked for."""
    chosen = frame_backend(backend, size[0] if size else None)
    frames = (_read_decord if chosen == "decord" else _read_pyav)(Path(path), list(indices), size)
    if size is not None and frames.shape[1:3] != (size[1], size[0]):
        raise RuntimeError(f"{chosen} returned {frames.shape} for size {size}")  # a reader bug
    return frames


def _read_decord(path: Path, indices: list[int], size: tuple[int, int] | None) -> np.ndarray:
    import decord

    kwargs = {"width": size[0], "height": size[1]} if size else {}
    # One decoding thread: preprocessing overlaps decode with encoding on its own thread.
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, **kwargs)
    _check_count(path, len(reader), indices)
    return reader.get_batch(indices).asnumpy()


def _read_pyav(path: Path, indices: list[int], size: tuple[int, int] | None) -> np.ndarray:
    import av

    # Sequential decode up to the last index: with short GOPs it costs about what seeking does.
    wanted, last = set(indices), max(indices, default=-1)
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if decoded in wanted:
                if size is not None:
                    frame = frame.reformat(width=size[0], height=size[1])
                kept[decoded] = frame.to_ndarray(format="rgb24")
            decoded += 1
            if decoded > last:
                break
    _check_count(path, decoded, indices)
    return np.stack([kept[i] for i in indices])


def _check_count(path: Path, available: int, indices: list[int]) -> None:
    missing = [i for i in indices if i >= available or i < 0]
    if missing:
        raise UserError(
            f"{path} has {available} frames, frame {missing[0]} was asked for: "
            "the clip changed since curation; re-run `ltx-lora curate`"
        )
