"""A clip's reference files (multi-reference IC-LoRA, `preprocess.reference=files`) in its cache
shard: `reference.<i>` [C, f_i, H/N, W/N] for the manifest row's `references[i]`, in order.

Curation has already conformed each file to the clip's bucket (`curation/references.py`): a
video to its width x height and at most its frames (8k+1), a still to one frame (a PNG). Each is
encoded on its own, as the inference pipelines encode each reference they are given (diffusers
0.42.1 `LTX2InContextPipeline._encode_reference_conditions` L1416-1440; ltx-pipelines
iclora_utils.py L119-148), at 1/N of the clip's size for `preprocess.reference_downscale=N`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ltx.controls import downscaled
from ltx.encode import encode_video
from ltx.frames import read_frames
from stagekit.errors import UserError

REFERENCE_PREFIX = "reference."  # reference.<i>: the row's i-th reference file's latents


def reference_keys(tensors: dict[str, Any]) -> list[str]:
    """The shard keys `reference.<i>` present, in reference order (i = 0, 1, ...)."""
    keys = [k for k in tensors if k.startswith(REFERENCE_PREFIX)]
    return sorted(keys, key=lambda k: int(k.removeprefix(REFERENCE_PREFIX)))


def read_references(row: dict[str, Any], curated_dir: Path, reader: str) -> list[np.ndarray]:
    """uint8 [f_i, H, W, 3] frames of each reference file the manifest row lists (a still is
    one frame), at the clip's bucket size. A row without references is refused: a
    multi-reference sample needs its sheet."""
    refs = row.get("references") or []
    if not refs:
        raise UserError(
            f"preprocess.reference=files: clip {row['id']} (from {row.get('source')}) has no "
            "reference files; put `<clip>_ref0.mp4|png` beside its source in raw/ and re-run "
            "`ltx-lora curate`, or drop the clip"
        )
    width, height, _ = row["bucket"]
    return [
        _read_one(Path(curated_dir) / r["path"], r["frames"], (width, height), reader) for r in refs
    ]


def _read_one(path: Path, frames: int, size: tuple[int, int], reader: str) -> np.ndarray:
    if path.suffix.lower() == ".png":  # a still, written by curation at the bucket size
        with Image.open(path) as img:
            still = np.array(img.convert("RGB"))  # writable: torch warns on read-only
        if still.shape[:2] != (size[1], size[0]):
            raise UserError(
                f"{path}: {still.shape[1]}x{still.shape[0]}, not {size[0]}x{size[1]}; "
                "re-run `ltx-lora curate`"
            )
        return still[None]
    return read_frames(path, range(frames), size, reader)


def reference_tensors(
    vae: Any, references: list[np.ndarray], factor: int
) -> dict[str, torch.Tensor]:
    """{`reference.<i>`: latents [C, f_i', H/(32N), W/(32N)]}: each reference downscaled by
    `factor` (area averaging, as `preprocess.reference=edges` does) and encoded on its own."""
    return {
        f"{REFERENCE_PREFIX}{i}": encode_video(
            vae, torch.from_numpy(downscaled(frames, factor, vae))
        )
        for i, frames in enumerate(references)
    }
