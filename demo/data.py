"""Procedural text-video pairs the demo base model is pretrained on: its prior.

A clip is one flat shape of one colour moving in one direction over one background, and its
caption says exactly that: "a red circle moving left over a blue sky". Orange, purple and pink
are deliberately absent, so a mascot drawn in them is a subject the demo base has never seen.
Same seed, same clip: every choice comes from a numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 64  # pixels, square: the evaluation's default 64x64
FRAMES = 17  # 8k+1 for the demo VAE (x2 time) -> 9 latent frames

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (30, 60, 230),
    "yellow": (245, 225, 30),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
# direction (dx, dy) in image coordinates (y grows downwards)
MOTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}
# phrase -> (top colour, bottom colour) of a vertical gradient
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "a blue sky": ((70, 130, 220), (160, 200, 245)),
    "a green field": ((40, 110, 40), (70, 150, 60)),
    "a dark night": ((10, 10, 25), (30, 30, 50)),
    "a grey wall": ((120, 120, 120), (140, 140, 140)),
    "a sandy beach": ((215, 195, 150), (200, 175, 125)),
}
# a shape's colour is never (nearly) its background's: it must stay visible
CLASHES = {("blue", "a blue sky"), ("green", "a green field"), ("white", "a grey wall")}
TRAVEL = 26.0  # pixels the shape moves over the clip
WORDS = sorted(
    {"a", "moving", "over"}
    | set(COLOURS)
    | set(SHAPES)
    | set(MOTIONS)
    | {w for phrase in BACKGROUNDS for w in phrase.split()}
)


@dataclass(frozen=True)
class Scene:
    """What one clip shows; `prompt` is its caption."""

    colour: str
    shape: str
    motion: str
    background: str

    @property
    def prompt(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.motion} over {self.background}"


def all_scenes() -> list[Scene]:
    """Every (colour, shape, motion, background) the prior covers, clashes excluded."""
    return [
        Scene(c, s, m, b)
        for c in COLOURS
        for s in SHAPES
        for m in MOTIONS
        for b in BACKGROUNDS
        if (c, b) not in CLASHES
    ]


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """uint8 [FRAMES, SIZE, SIZE, 3]: the scene with a random size, start point and tint."""
    radius = rng.uniform(7.0, 10.0)
    dx, dy = MOTIONS[scene.motion]
    # start so the whole path stays inside the frame
    lo, hi = radius + 2, SIZE - radius - 2
    start = rng.uniform(lo, hi, size=2)
    start[0] = _start_along(start[0], dx, lo, hi)
    start[1] = _start_along(start[1], dy, lo, hi)
    canvas = gradient(*BACKGROUNDS[scene.background], rng)
    colour = np.clip(np.array(COLOURS[scene.colour]) + rng.uniform(-12, 12, 3), 0, 255)
    frames = []
    for i in range(FRAMES):
        t = i / (FRAMES - 1)
        cx, cy = start[0] + dx * TRAVEL * t, start[1] + dy * TRAVEL * t
        img = canvas.copy()
        img[shape_mask(scene.shape, cx, cy, radius)] = colour
        frames.append(img)
    return np.stack(frames).astype(np.uint8)


def _start_along(value: float, direction: int, lo: float, hi: float) -> float:
    if direction > 0:
        return min(value, hi - TRAVEL)
    if direction < 0:
        return max(value, lo + TRAVEL)
    return value


def gradient(
    top: tuple[int, int, int], bottom: tuple[int, int, int], rng: np.random.Generator
) -> np.ndarray:
    """float32 [SIZE, SIZE, 3] vertical gradient, tinted a little per clip."""
    jitter = rng.uniform(-10, 10, 3)
    t = np.linspace(0.0, 1.0, SIZE, dtype=np.float32)[:, None, None]
    img = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32) + jitter
    return np.clip(np.broadcast_to(img, (SIZE, SIZE, 3)), 0, 255).astype(np.float32)


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """bool [SIZE, SIZE] of a shape centred at (cx, cy) with 'radius' r."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(xx - cx) <= 0.85 * r) & (np.abs(yy - cy) <= 0.85 * r)
    # upward triangle: apex at the top, base at the bottom
    v = (yy - (cy - r)) / (2 * r)  # 0 at the apex, 1 at the base
    return (v >= 0) & (v <= 1) & (np.abs(xx - cx) <= v * r)


def sample_batch(
    rng: np.random.Generator, n: int, scenes: list[Scene] | None = None
) -> tuple[list[Scene], np.ndarray]:
    """n random scenes and their clips uint8 [n, FRAMES, SIZE, SIZE, 3]."""
    pool = scenes or all_scenes()
    picked = [pool[i] for i in rng.integers(0, len(pool), size=n)]
    return picked, np.stack([render(s, rng) for s in picked])
