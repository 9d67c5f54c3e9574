"""Motion from OpenCV's DIS optical flow: how much a clip moves and how smoothly."""

from __future__ import annotations

import itertools

import numpy as np

NAME = "opencv-dis-flow"


def backend_label() -> str:
    """Label for motion scores: the algorithm and OpenCV version (there are no weights)."""
    import cv2

    return f"{NAME}@cv{cv2.__version__}"


def flow_fields(frames: np.ndarray) -> np.ndarray:
    """Dense flow between consecutive frames: uint8 [F, H, W, 3] → float32 [F-1, H, W, 2] (px)."""
    import cv2

    cv2.setNumThreads(1)  # a few small frames: threads cost more than they give
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([dis.calc(a, b, None) for a, b in itertools.pairwise(grey)])


def motion_stats(frames: np.ndarray) -> dict[str, float]:
    """`speed`: median per-pair mean flow magnitude (px/frame); `speed_rel`: the same per frame
    width (so sizes compare); `smoothness` in [0, 1]: 1 when the flow changes nothing from pair
    to pair (a steady pan), lower when motion jerks."""
    if len(frames) < 3:
        return {"speed": 0.0, "speed_rel": 0.0, "smoothness": 1.0}
    flow = flow_fields(frames)
    per_pair = np.linalg.norm(flow, axis=-1).mean(axis=(1, 2))
    change = np.linalg.norm(np.diff(flow, axis=0), axis=-1).mean(axis=(1, 2))
    speed = float(np.median(per_pair))
    jerk = float(change.mean())
    smooth = 1.0 - jerk / (float(per_pair.mean()) + jerk + 1e-6)
    return {"speed": speed, "speed_rel": speed / frames.shape[2], "smoothness": smooth}
