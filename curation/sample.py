"""The procedural sample dataset: one shape-built mascot in short clips, generated on first use.

No binary media lives in git; this generator is how `datasets/sample/` appears. Same seed, same
bytes: every random choice comes from the seed and the encoder runs single-threaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from curation.media import write_clip
from stagekit.files import atomic_dir

FPS = 24
AUDIO_RATE = 48000  # sources at a common camera rate: curation resamples them
TRIGGER = "zorblat"

# The mascot's look never changes: that identity is what an adapter should learn.
BODY = (240, 120, 30)
BELLY = (255, 200, 120)
EYE = (255, 255, 255)
PUPIL = (20, 20, 30)
HAT = (110, 40, 190)
HAT_BAND = (250, 220, 40)

Canvas = np.ndarray  # [H, W, 3] uint8
Path2D = Callable[[float], tuple[float, float]]  # progress 0..1 -> centre as fractions of W, H


@dataclass(frozen=True)
class ClipSpec:
    """One generated clip: size, length, background, motion, tone and caption."""

    name: str
    width: int
    height: int
    seconds: float
    background: str
    motion: str
    pitch_hz: float
    sidecar: bool = True


RAW_CLIPS = (
    ClipSpec("mascot_01_bounce", 128, 96, 2.0, "striped_blue", "bouncing", 220.0),
    ClipSpec("mascot_02_slide", 96, 128, 1.5, "green_gradient", "sliding", 247.0),
    ClipSpec("mascot_03_circle", 112, 112, 1.75, "pink_noise", "circling", 262.0),
    ClipSpec("mascot_04_zigzag", 160, 90, 2.0, "letterbox_grey", "zigzagging", 294.0),
    ClipSpec("mascot_05_wave", 128, 96, 1.5, "yellow_checker", "waving", 330.0),
    ClipSpec("mascot_06_hop", 96, 128, 2.0, "sunset_gradient", "hopping", 349.0, sidecar=False),
    ClipSpec("mascot_07_drift", 112, 112, 1.5, "grey_noise", "drifting", 392.0),
    ClipSpec("mascot_08_spiral", 128, 96, 1.75, "teal_radial", "spiralling", 440.0),
    ClipSpec("mascot_09_blink", 128, 96, 0.2, "striped_blue", "hopping", 494.0),  # too short
)
REFERENCE_CLIPS = (
    ClipSpec("reference_01", 112, 112, 1.5, "lavender_gradient", "sliding", 523.0),
    ClipSpec("reference_02", 128, 96, 1.5, "red_stripes", "bouncing", 587.0),
    ClipSpec("reference_03", 96, 128, 1.5, "grey_noise", "circling", 659.0),
)

# name -> (pattern, colour at weight 0, colour at weight 1)
BACKGROUNDS: dict[str, tuple[str, tuple[int, int, int], tuple[int, int, int]]] = {
    "striped_blue": ("vstripes", (30, 60, 160), (90, 140, 230)),
    "red_stripes": ("hstripes", (170, 30, 40), (230, 110, 110)),
    "green_gradient": ("gradient", (20, 90, 40), (150, 220, 120)),
    "lavender_gradient": ("gradient", (150, 130, 200), (230, 220, 250)),
    "sunset_gradient": ("gradient", (240, 180, 90), (90, 40, 120)),
    "pink_noise": ("noise", (180, 90, 140), (255, 190, 235)),
    "grey_noise": ("noise", (80, 80, 80), (180, 180, 180)),
    "yellow_checker": ("checker", (240, 210, 60), (250, 240, 170)),
    "teal_radial": ("radial", (120, 230, 220), (10, 70, 80)),
    "letterbox_grey": ("letterbox", (0, 0, 0), (190, 190, 200)),
}
BACKGROUND_WORDS = {
    "striped_blue": "a striped blue background",
    "green_gradient": "a green gradient background",
    "pink_noise": "a noisy pink background",
    "letterbox_grey": "a grey letterboxed background",
    "yellow_checker": "a yellow checkerboard background",
    "sunset_gradient": "a sunset gradient background",
    "grey_noise": "a noisy grey background",
    "teal_radial": "a glowing teal background",
    "lavender_gradient": "a lavender gradient background",
    "red_stripes": "a red striped background",
}
MOTION_WORDS = {
    "bouncing": "bouncing across",
    "sliding": "sliding across",
    "circling": "circling over",
    "zigzagging": "zigzagging over",
    "waving": "waving its way across",
    "hopping": "hopping in place on",
    "drifting": "drifting diagonally over",
    "spiralling": "spiralling over",
}


def generate_sample_dataset(dest: Path, seed: int = 0) -> None:
    """Write `dest/` (dataset.yaml, raw/, reference/) atomically; identical bytes for one seed."""
    with atomic_dir(Path(dest)) as tmp:
        _write_card(tmp / "dataset.yaml", seed)
        for folder, specs in (("raw", RAW_CLIPS), ("reference", REFERENCE_CLIPS)):
            (tmp / folder).mkdir()
            for index, spec in enumerate(specs):
                rng = np.random.default_rng([seed, len(folder), index])
                _write_sample_clip(tmp / folder, spec, rng)


def sample_caption(spec: ClipSpec) -> str:
    """E.g. 'zorblat mascot bouncing across a striped blue background'."""
    return f"{TRIGGER} mascot {MOTION_WORDS[spec.motion]} {BACKGROUND_WORDS[spec.background]}"


def _write_card(path: Path, seed: int) -> None:
    card = {
        "client": "demo",
        "adapter": "mascot",
        "trigger": TRIGGER,
        "class_noun": "mascot",
        "owner": "ltx-lora sample generator",
        "rights": "synthetic clips generated procedurally; no third-party rights, use freely",
        "settings": {"generator": "curation.sample", "seed": seed},
    }
    header = "# The sample dataset's card, generated by curation.sample (see docs/datasets.md).\n"
    path.write_text(header + yaml.safe_dump(card, sort_keys=False), encoding="utf-8")


def _write_sample_clip(folder: Path, spec: ClipSpec, rng: np.random.Generator) -> None:
    count = max(1, round(spec.seconds * FPS))
    background = _background(spec.background, spec.width, spec.height, rng)
    path = _motion(spec.motion, rng)
    speed = rng.uniform(0.8, 1.25)  # clips differ in pace as well as in path
    frames = [
        _draw_mascot(background(i), *path(min(1.0, speed * i / max(1, count - 1))), phase=i / FPS)
        for i in range(count)
    ]
    audio = _tone(spec.pitch_hz, count / FPS)
    dest = folder / f"{spec.name}.mp4"
    write_clip(dest, frames, FPS, audio=audio, sample_rate=AUDIO_RATE, gop=24)
    if spec.sidecar:
        (folder / f"{spec.name}.txt").write_text(sample_caption(spec) + "\n", encoding="utf-8")


def _tone(pitch_hz: float, seconds: float) -> np.ndarray:
    """A soft sine with 20 ms fades (no clicks), `[1, samples]` float32."""
    t = np.arange(round(seconds * AUDIO_RATE)) / AUDIO_RATE
    fade = np.clip(np.minimum(t, seconds - t) / 0.02, 0.0, 1.0)
    return (0.3 * fade * np.sin(2 * np.pi * pitch_hz * t))[None].astype(np.float32)


def _background(kind: str, w: int, h: int, rng: np.random.Generator) -> Callable[[int], Canvas]:
    """A frame-index -> canvas function: two tinted colours blended by a (moving) pattern."""
    pattern, *colours = BACKGROUNDS[kind]
    jitter = rng.uniform(-20, 20, size=3)  # each clip's palette differs a little
    a, b = (np.clip(np.array(c, np.float32) + jitter, 0, 255) for c in colours)
    weight = _pattern(pattern, w, h, rng)

    def canvas(i: int) -> Canvas:
        t = weight(i)[..., None]
        return (a * (1 - t) + b * t).astype(np.uint8)

    return canvas


def _pattern(kind: str, w: int, h: int, rng: np.random.Generator) -> Callable[[int], np.ndarray]:
    """Blend weights `[H, W]` in 0..1 per frame index; stripes scroll and noise flickers."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "vstripes":
        return lambda i: (xx + i) // 8 % 2
    if kind == "hstripes":
        return lambda i: (yy + i) // 8 % 2
    if kind == "noise":
        cells = rng.uniform(0, 1, size=(h // 4 + 2, w // 4 + 2)).astype(np.float32)
        big = np.repeat(np.repeat(cells, 4, axis=0), 4, axis=1)
        return lambda i: big[i // 6 % 2 : i // 6 % 2 + h, :w]
    static = {
        "gradient": lambda: (yy / max(1, h - 1) + xx / max(1, w - 1)) / 2,
        "checker": lambda: (xx // 12 + yy // 12) % 2,
        "radial": lambda: np.clip(
            np.hypot(xx - w / 2, yy - h / 2) / (0.6 * math.hypot(w, h)), 0, 1
        ),
        "letterbox": lambda: np.where(np.abs(yy - h / 2) < 0.4 * h, 0.3 + 0.7 * xx / (w - 1), 0.0),
    }[kind]()
    return lambda i: static


def _motion(kind: str, rng: np.random.Generator) -> Path2D:
    """A path for the mascot's centre, in fractions of the frame, over progress 0..1."""
    p = rng.uniform(0, 2 * math.pi)
    paths: dict[str, Path2D] = {
        "bouncing": lambda t: (0.2 + 0.6 * t, 0.7 - 0.4 * abs(math.sin(3 * math.pi * t + p))),
        "sliding": lambda t: (0.2 + 0.6 * t, 0.55),
        "circling": lambda t: (
            0.5 + 0.25 * math.cos(2 * math.pi * t + p),
            0.5 + 0.25 * math.sin(2 * math.pi * t + p),
        ),
        "zigzagging": lambda t: (0.2 + 0.6 * t, 0.5 + 0.2 * (2 * abs((4 * t) % 2 - 1) - 1)),
        "waving": lambda t: (0.2 + 0.6 * t, 0.5 + 0.2 * math.sin(4 * math.pi * t + p)),
        "hopping": lambda t: (0.5, 0.65 - 0.25 * abs(math.sin(4 * math.pi * t))),
        "drifting": lambda t: (0.25 + 0.5 * t, 0.25 + 0.5 * t),
        "spiralling": lambda t: (
            0.5 + 0.3 * (1 - t) * math.cos(4 * math.pi * t + p),
            0.5 + 0.3 * (1 - t) * math.sin(4 * math.pi * t + p),
        ),
    }
    return paths[kind]


def _draw_mascot(canvas: Canvas, fx: float, fy: float, phase: float) -> Canvas:
    """Round orange body, pale belly, two eyes that blink, a purple hat with a yellow band."""
    img = canvas.copy()
    h, w = img.shape[:2]
    r = 0.2 * min(w, h)
    cx, cy = fx * w, fy * h
    yy, xx = np.mgrid[0:h, 0:w]

    def ellipse(x: float, y: float, rx: float, ry: float) -> np.ndarray:
        return ((xx - x) / rx) ** 2 + ((yy - y) / ry) ** 2 <= 1.0

    def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)

    img[ellipse(cx, cy, r, r)] = BODY
    img[ellipse(cx, cy + 0.35 * r, 0.55 * r, 0.45 * r)] = BELLY
    blink = 0.15 if (phase % 1.0) > 0.9 else 1.0
    for side in (-1, 1):
        ex, ey = cx + side * 0.38 * r, cy - 0.2 * r
        img[ellipse(ex, ey, 0.25 * r, 0.25 * r * blink)] = EYE
        img[ellipse(ex + 0.06 * r, ey, 0.11 * r, 0.11 * r * blink)] = PUPIL
    img[rect(cx - 0.75 * r, cy - 1.05 * r, cx + 0.75 * r, cy - 0.85 * r)] = HAT  # brim
    img[rect(cx - 0.45 * r, cy - 1.75 * r, cx + 0.45 * r, cy - 0.85 * r)] = HAT  # crown
    img[rect(cx - 0.45 * r, cy - 1.15 * r, cx + 0.45 * r, cy - 0.98 * r)] = HAT_BAND
    return img
