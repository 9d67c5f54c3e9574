"""Source frames on a constant-rate grid: which stored frame is on screen at each output slot."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import av

# Frame times are floats from integer pts; this absorbs their rounding.
EPS = 1e-6


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
        while held is not None and n / fps < t - t0 - EPS:
            yield n, (held if n / fps < shown_until - EPS else None), t0 + n / fps
            n += 1
        held, held_t, gap = frame, t - t0, False
    # Past the last frame: it stays on screen for one source frame period.
    while held is not None and n / fps < held_t + 1 / src_fps - EPS:
        yield n, held, t0 + n / fps
        n += 1
