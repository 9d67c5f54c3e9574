"""What a conditioned mode's renders are conditioned on, taken from held-out reference clips.

Base and adapter get the same conditioning for a prompt, so their paired difference is the
adapter's alone. Prompt i takes reference clip i mod n (clips long enough for the render), fitted
to the render size as the denoising check fits them (`fit_clip`: centre crop, resize, the first
`frames` frames):
- image_to_video: its first frame, at latent index 0 (LTX2ConditionPipeline);
- keyframes: its first and last frames, at latent indices 0 and -1;
- reference_video: a control video for the IC-LoRA (LTX2InContextPipeline) at the adapter's
  `reference_downscale_factor`: the clip's paired control (`<clip>_ref.mp4` beside it) or its
  Sobel edges (`ltx.controls`, the same function `preprocess.reference=edges` trains on);
- multi_reference: the clip's reference sheet, `<clip>_ref<N>.mp4|png` beside it in N's order
  (`_ref` alone first; curation/references.py's names), each fitted to the render size (a
  video's first `frames` frames at most, a still as one frame), all given to the pipeline.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.denoising import fit_clip
from evaluation.modes import Mode
from ltx.controls import edge_frames
from stagekit.errors import UserError

PAIRED_CONTROL = re.compile(r"_ref(\d*)$")  # `clip_ref.mp4`, `clip_ref2.png`: not clips
STILL_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
SHEET_SUFFIXES = STILL_SUFFIXES | {".mp4", ".mov", ".mkv", ".webm", ".avi"}


@dataclass(frozen=True)
class Conditioning:
    """One prompt's conditioning: images at latent indices, or an IC-LoRA reference video."""

    source: Path  # the held-out clip it was taken from
    images: tuple[tuple[np.ndarray, int], ...] = ()  # (uint8 [H, W, 3], latent index)
    reference: np.ndarray | None = None  # uint8 [F, H, W, 3]
    sheet: tuple[np.ndarray, ...] = ()  # multi_reference: uint8 [F_i, H, W, 3] each, in order
    factor: int = 1  # the reference's downscale factor
    kind: str = field(default="")  # what it is, in words (the report's caption)

    def key(self) -> str:
        """Hash of every pixel and index: part of each render's cache key."""
        from hashlib import sha256

        h = sha256(f"{self.kind}|{self.factor}".encode())
        for image, index in self.images:
            h.update(f"{index}|{image.shape}".encode() + image.tobytes())
        for video in (self.reference, *self.sheet) if self.reference is not None else self.sheet:
            h.update(f"{video.shape}".encode() + video.tobytes())
        return h.hexdigest()

    def generate_kwargs(self) -> dict[str, Any]:
        """The `ltx.sampling.generate` arguments that apply it."""
        if self.reference is not None:
            return {"reference": (self.reference, self.factor)}
        if self.sheet:
            return {"reference": (list(self.sheet), self.factor)}
        return {"conditions": list(self.images)}


def is_control(path: Path) -> bool:
    """A paired IC-LoRA control (`<clip>_ref*.mp4`), which is not a clip of the subject."""
    return bool(PAIRED_CONTROL.search(path.stem))


def reference_sheet(clip: Path) -> list[Path]:
    """`<clip>_ref<N>.<video or still>` files beside `clip`, in N's order (`_ref` alone first)."""
    name = re.compile(rf"{re.escape(clip.stem)}_ref(\d*)")
    found = [
        (int(m.group(1) or -1), p)
        for p in clip.parent.glob(f"{glob.escape(clip.stem)}_ref*")
        if p.suffix.lower() in SHEET_SUFFIXES and (m := name.fullmatch(p.stem))
    ]
    return [p for _, p in sorted(found)]


def plan_conditioning(
    mode: Mode,
    prompts: list[str],
    references: list[Path],
    size: tuple[int, int, int],
    control: str = "auto",
) -> dict[str, Conditioning]:
    """prompt → its Conditioning ({} for modes rendered from text alone). `size`: (width,
    height, frames) of the renders; `control`: evaluation.reference_control."""
    if not mode.conditioned:
        return {}
    if mode.name == "multi_reference":
        return _plan_sheets(mode, prompts, references, size)
    from ltx.sampling import read_clip

    fitted = [(p, fit_clip(read_clip(p).video, *size)) for p in references]
    usable = [(p, f) for p, f in fitted if f is not None]
    if not usable:
        raise UserError(
            f"evaluation in mode {mode.name} conditions on held-out reference clips, and none "
            f"has {size[2]} frames: add longer clips to the reference folder or lower "
            "evaluation.frames"
        )
    plan = {}
    for i, prompt in enumerate(prompts):
        path, frames = usable[i % len(usable)]
        plan[prompt] = _conditioning(mode, path, frames, size, control)
    return plan


def _plan_sheets(
    mode: Mode, prompts: list[str], references: list[Path], size: tuple[int, int, int]
) -> dict[str, Conditioning]:
    """multi_reference: prompt i takes the i-th (mod n) held-out clip that has a sheet."""
    sheets = [(p, sheet) for p in references if (sheet := reference_sheet(p))]
    if not sheets:
        raise UserError(
            "evaluation in mode multi_reference conditions on held-out reference sheets, and "
            "no reference clip has one: put `<clip>_ref0.mp4|png` (…_ref1, …) beside clips in "
            "datasets/<name>/reference/ (docs/datasets.md, Reference files)"
        )
    plan = {}
    for i, prompt in enumerate(prompts):
        clip, files = sheets[i % len(sheets)]
        plan[prompt] = _sheet_conditioning(mode, clip, files, size)
    return plan


def _sheet_conditioning(
    mode: Mode, clip: Path, files: list[Path], size: tuple[int, int, int]
) -> Conditioning:
    videos = tuple(_sheet_item(f, size) for f in files)
    kind = f"reference sheet of {len(files)}"
    return Conditioning(clip, sheet=videos, factor=mode.reference_downscale_factor, kind=kind)


def _sheet_item(path: Path, size: tuple[int, int, int]) -> np.ndarray:
    """One sheet entry fitted to the render size: a still as one frame, a video's first frames
    (at most the render's)."""
    if path.suffix.lower() in STILL_SUFFIXES:
        # Pillow, not OpenCV: once decord (the frame reader) is imported, OpenCV's PNG decoder
        # fails in the same process ("libpng error: bad parameters to zlib")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                frames = np.array(image.convert("RGB"))[None]  # writable: torch warns on read-only
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"{path}: not a readable image ({e})") from e
    else:
        from ltx.sampling import read_clip

        frames = read_clip(path).video
    count = min(len(frames), size[2])
    return fit_clip(frames, size[0], size[1], count)


def clip_conditioning(
    mode: Mode, path: Path, frames: np.ndarray, size: tuple[int, int, int], control: str
) -> Conditioning | None:
    """Held-out clip `path`'s own conditioning (its fitted `frames`): as `plan_conditioning`
    gives a prompt, for the denoising check. None: a multi_reference clip without a sheet."""
    if mode.name != "multi_reference":
        return _conditioning(mode, path, frames, size, control)
    files = reference_sheet(path)
    return _sheet_conditioning(mode, path, files, size) if files else None


def _conditioning(
    mode: Mode, path: Path, frames: np.ndarray, size: tuple[int, int, int], control: str
) -> Conditioning:
    if mode.name == "image_to_video":
        return Conditioning(path, ((frames[0], 0),), kind="first frame")
    if mode.name == "keyframes":
        return Conditioning(path, ((frames[0], 0), (frames[-1], -1)), kind="first and last frames")
    video, kind = _control(path, frames, size, control)
    return Conditioning(path, reference=video, factor=mode.reference_downscale_factor, kind=kind)


def _control(
    path: Path, frames: np.ndarray, size: tuple[int, int, int], control: str
) -> tuple[np.ndarray, str]:
    """The IC-LoRA control for one clip, at the render size (the pipeline downscales it)."""
    from ltx.sampling import read_clip

    paired = [p for p in reference_sheet(path) if p.suffix.lower() not in STILL_SUFFIXES]
    if control == "paired" and not paired:
        raise UserError(
            f"evaluation.reference_control=paired: no {path.stem}_ref{path.suffix} beside {path}"
        )
    if paired and control != "edges":
        fitted = fit_clip(read_clip(paired[0]).video, *size)
        if fitted is None:
            raise UserError(f"{paired[0]} is shorter than evaluation.frames={size[2]}")
        return fitted, f"paired control {paired[0].name}"
    return edge_frames(frames), "Sobel edges"


def write_media(out: Path, name: str, cond: Conditioning) -> list[str]:
    """The conditioning as files under `out` (PNG images, an mp4 reference video); the relative
    paths the report shows beside the renders."""
    import cv2

    from ltx.sampling import Clip, write_clip

    out.mkdir(parents=True, exist_ok=True)
    if cond.reference is not None:
        write_clip(out / f"{name}.mp4", Clip(cond.reference, 24.0))
        return [f"{name}.mp4"]
    if cond.sheet:
        files = []
        for i, video in enumerate(cond.sheet):
            if len(video) == 1:  # a still
                files.append(f"{name}-ref{i}.png")
                cv2.imwrite(str(out / files[-1]), np.ascontiguousarray(video[0, ..., ::-1]))
            else:
                files.append(f"{name}-ref{i}.mp4")
                write_clip(out / files[-1], Clip(video, 24.0))
        return files
    files = []
    for image, index in cond.images:
        file = f"{name}-{'first' if index == 0 else 'last' if index == -1 else index}.png"
        cv2.imwrite(str(out / file), np.ascontiguousarray(image[..., ::-1]))  # OpenCV: BGR
        files.append(file)
    return files
