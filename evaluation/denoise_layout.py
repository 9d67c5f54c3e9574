"""Held-out denoising in the keyframe and reference modes: each reference clip conditioned on
its own keyframes or control, laid out as the trainer's strategy lays it out (the sequence
builders of `ltx.conditioning`, which both import), so the error asks the adapter the question
it was trained on.

- keyframes: the clip's first frame as a keyframe image's latent over latent frame 0 (timestep
  0), its last frame's appended where the condition pipeline puts an image at index -1; the
  error covers the generated frames 1.. (trainer.strategies.Keyframes);
- reference_video / multi_reference: the clip's control (paired or Sobel edges) or its sheet,
  each reference downscaled by the adapter's factor, encoded on its own and appended at
  timestep 0; the error covers every target frame (trainer.strategies.ReferenceVideo).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.conditioning import Conditioning, clip_conditioning, reference_sheet
from evaluation.modes import Mode
from stagekit.hashing import sha256_file

# mode -> what its label says after the sigmas
LABELS = {
    "keyframes": "first-last-keyframes",
    "reference_video": "reference-appended",
    "multi_reference": "sheet-appended",
}


@dataclass(frozen=True)
class Conditioned:
    """How the clips of a conditioned mode are conditioned for denoising."""

    ltx_version: str  # keyframe images are re-compressed at the version's CRF
    make: Callable[[Path, np.ndarray], Conditioning | None]  # (clip, fitted frames) -> its own
    key: dict[str, Any]  # what the errors depend on beyond the clips' bytes (for the cache)


def conditioned_for(
    mode: Mode,
    size: tuple[int, int, int],
    control: str,
    ltx_version: str,
    references: Iterable[Path],
) -> Conditioned:
    """How `mode` conditions each held-out clip of `references` (renders of `size`;
    `control`: evaluation.reference_control), keyed by the paired controls and sheets beside
    them, whose bytes the errors depend on too."""

    def make(path: Path, frames: np.ndarray) -> Conditioning | None:
        return clip_conditioning(mode, path, frames, size, control)

    beside = {p.name: [sha256_file(f) for f in reference_sheet(p)] for p in references}
    factor = mode.reference_downscale_factor
    key = {"mode": mode.name, "factor": factor, "control": control, "ltx": ltx_version}
    return Conditioned(ltx_version, make, {**key, "beside": beside})


@dataclass(frozen=True)
class Layout:
    """One clip's clean conditioning latents."""

    first: torch.Tensor | None  # [C, 1, H, W]: over latent frame 0 (keyframes)
    appended: tuple[torch.Tensor, ...]  # each [C, f, h, w], after the target's tokens
    indices: tuple[int, ...] | None  # keyframes: each appended image's latent index


def clip_layout(pipe: Any, cond: Conditioning, frames: int, how: Conditioned) -> Layout:
    """The latents `cond` puts into a `frames`-latent-frame sequence, encoded as the cache
    encodes them for training."""
    from ltx.controls import downscaled
    from ltx.encode import encode_video
    from ltx.keyframes import keyframe_latent

    vae = pipe.vae
    if cond.images:
        latents = {i % frames: keyframe_latent(vae, im, how.ltx_version) for im, i in cond.images}
        later = sorted(k for k in latents if k != 0)
        return Layout(latents.get(0), tuple(latents[k] for k in later), tuple(later))
    videos = [cond.reference] if cond.reference is not None else list(cond.sheet)
    step = vae.temporal_compression_ratio  # a VAE takes 8k + 1 frames
    refs = tuple(
        encode_video(vae, downscaled(v[: (len(v) - 1) // step * step + 1], cond.factor, vae))
        for v in videos
    )
    return Layout(None, refs, None)


def conditioned_velocity(
    pipe: Any,
    layout: Layout,
    x_t: torch.Tensor,
    levels: torch.Tensor,
    text: dict[str, torch.Tensor],
    fps: float,
) -> tuple[torch.Tensor, int]:
    """The target's velocity [N, C, F, H, W] for noisy `x_t` (already laid out by
    `noised_layout`) at per-sample `levels` [N] or per-token [N, F*H*W], and the first latent
    frame its error counts."""
    from ltx.conditioning import frame_coords, predict_with_appended, predict_with_reference

    n, _, _, h, w = x_t.shape
    appended = [a[None].expand(n, *a.shape) for a in layout.appended]
    if layout.indices is None:
        velocity, _ = predict_with_reference(
            pipe, x_t, appended, None, text, levels, levels, fps=fps
        )
        return velocity, 0
    transformer = pipe.transformer
    coords = [frame_coords(transformer, n, k, h, w, fps) for k in layout.indices]
    audio_levels = levels.max(dim=1).values if levels.ndim == 2 else levels
    velocity, _ = predict_with_appended(
        pipe, x_t, levels, appended, torch.cat(coords, dim=2), None, text, audio_levels, fps=fps
    )
    return velocity, 1


def noised_layout(layout: Layout, x_t: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Put the clean first keyframe into `x_t` [N, C, F, H, W] (in place); the per-token noise
    levels [N, F*H*W] (0 on its tokens), or `sigmas` [N] when nothing overwrites a frame."""
    if layout.first is None:
        return sigmas
    from evaluation.denoising import first_frame_clean

    return first_frame_clean(x_t, layout.first, sigmas)
