"""Held-out denoising error: how well base and adapter predict the reference clips' velocity.

Each reference clip is fitted to the render size, encoded with the pipeline's normalisation,
noised at fixed sigmas with fixed noise, and denoised under each in-distribution prompt with the
sampler's conventions (`ltx.forward`): the mean squared velocity error, per clip, prompt and
sigma, for both sides on the same inputs. An adapter that learned the subject predicts its clips
better than the base; one trained under other conventions than the sampler's (a flipped target,
latents not normalised) predicts them worse, whatever its renders look like. No sampling: one
forward pass per clip, prompt and side.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stagekit.files import read_json, write_json
from stagekit.hashing import sha256_json

if TYPE_CHECKING:  # evaluation.conditioning imports this module: the layouts load lazily
    from evaluation.conditioning import Conditioning
    from evaluation.denoise_layout import Conditioned, Layout

SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)  # spread over the schedule: coarse layout to fine detail
DENOISE_VERSION = 1  # bump when the errors change meaning, so cached ones are not reused
Errors = dict[tuple[str, int], float]  # (clip name, prompt x sigma index) -> velocity MSE


def cached_errors(
    cache_dir: Path,
    model_hash: str,
    sides: dict[str, tuple[Path | None, str | None]],
    references: dict[Path, str],
    prompts: list[str],
    size: tuple[int, int, int],
    fps: float,
    load_pipe: Callable[[], Any],
    strength: float = 1.0,
    first_frame: bool = False,
    conditioned: Conditioned | None = None,
) -> dict[str, Errors] | None:
    """side -> errors, each side cached by everything that determines it (the base's are shared
    by every adapter); the pipeline loads only when a side is missing. `references`: clip ->
    its sha256. None when no reference clip has `size[2]` frames (or, `conditioned`, none has
    its conditioning). `first_frame`: image-to-video, each clip's first latent frame clean
    (`first_frame_clean`); `conditioned`: keyframes or references, each clip its own
    (evaluation/denoise_layout.py)."""
    from ltx.sampling import read_clip

    common = {"v": DENOISE_VERSION, "model": model_hash, "prompts": prompts, "sigmas": SIGMAS}
    common |= {"references": list(references.values()), "size": size, "fps": fps}
    if first_frame:  # text-to-video keys stay those made before this existed
        common["first_frame_clean"] = True
    if conditioned is not None:
        common["conditioned"] = conditioned.key
    files = {
        side: cache_dir / "denoising" / f"{sha256_json(common | _side(sha, strength))[:32]}.json"
        for side, (_, sha) in sides.items()
    }
    missing = {side: sides[side][0] for side, f in files.items() if not f.is_file()}
    if missing:
        fitted = {
            f"{i:02d}-{p.name}": fit_clip(read_clip(p).video, *size)
            for i, p in enumerate(references)
        }
        clips = {name: f for name, f in fitted.items() if f is not None}
        conditions = None
        if conditioned is not None:
            paths = {f"{i:02d}-{p.name}": p for i, p in enumerate(references)}
            made = {name: conditioned.make(paths[name], f) for name, f in clips.items()}
            conditions = {name: c for name, c in made.items() if c is not None}
            clips = {name: clips[name] for name in conditions}
        if not clips:
            return None
        errors_by_side = denoising_errors(
            load_pipe(),
            missing,
            clips,
            prompts,
            fps=fps,
            strength=strength,
            first_frame=first_frame,
            conditions=conditions,
            conditioned=conditioned,
        )
        for side, errors in errors_by_side.items():
            write_json(files[side], [[name, i, e] for (name, i), e in errors.items()])
    return {
        side: {(name, int(i)): float(e) for name, i, e in read_json(f)} for side, f in files.items()
    }


def _side(adapter_sha: str | None, strength: float) -> dict[str, Any]:
    """What a side's errors depend on: the base's do not depend on the adapter's strength."""
    if adapter_sha is None or strength == 1.0:  # full strength: the keys made before it existed
        return {"adapter": adapter_sha}
    return {"adapter": adapter_sha, "strength": strength}


def fit_clip(frames: np.ndarray, width: int, height: int, count: int) -> np.ndarray | None:
    """uint8 [F, H, W, 3] → the first `count` frames, centre-cropped to the aspect and resized
    to width x height; None when the clip is shorter than `count` frames."""
    if len(frames) < count:
        return None
    x = torch.from_numpy(np.ascontiguousarray(frames[:count])).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    crop_h, crop_w = min(h, round(w * height / width)), min(w, round(h * width / height))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    x = x[..., top : top + crop_h, left : left + crop_w]
    x = torch.nn.functional.interpolate(
        x, size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def denoising_errors(
    pipe: Any,
    adapters: dict[str, Path | None],
    clips: dict[str, np.ndarray],
    prompts: list[str],
    *,
    fps: float,
    seed: int = 0,
    strength: float = 1.0,
    first_frame: bool = False,
    conditions: dict[str, Conditioning] | None = None,
    conditioned: Conditioned | None = None,
) -> dict[str, Errors]:
    """side → {(clip name, prompt x sigma index): velocity MSE} for every side in `adapters`
    (None: the base), on identical noisy latents; with `first_frame`, as image-to-video is
    trained and sampled (`first_frame_clean`), the error over the generated frames only; with
    `conditions` (clip name → its Conditioning, laid out as `conditioned` says), as keyframes
    and IC-LoRA adapters are trained."""
    from evaluation.denoise_layout import clip_layout, noised_layout
    from ltx.encode import encode_prompts, encode_video
    from ltx.forward import noisy_latents
    from ltx.sampling import adapter_applied

    latents = {name: encode_video(pipe.vae, frames) for name, frames in clips.items()}
    text = encode_prompts(pipe, prompts)
    sigmas = torch.tensor(SIGMAS)
    noisy = {}
    for i, (name, z) in enumerate(latents.items()):
        g = torch.Generator().manual_seed(seed * 100_003 + i)
        noise = torch.randn((len(SIGMAS), *z.shape), generator=g)
        x_t, target = noisy_latents(z[None].expand_as(noise), noise, sigmas)
        layout = None
        if conditions is not None and conditioned is not None:
            layout = clip_layout(pipe, conditions[name], z.shape[1], conditioned)
            levels = noised_layout(layout, x_t, sigmas)
        else:
            levels = first_frame_clean(x_t, z, sigmas) if first_frame else sigmas
        noisy[name] = (x_t, target, levels, layout)
    errors: dict[str, Errors] = {}
    for side, adapter in adapters.items():
        with adapter_applied(pipe, adapter, strength):
            errors[side] = {
                (name, j * len(SIGMAS) + k): err
                for name, (x_t, target, levels, layout) in noisy.items()
                for j in range(len(prompts))
                for k, err in enumerate(_errors(pipe, x_t, target, text, j, levels, fps, layout))
            }
    return errors


def first_frame_clean(x_t: torch.Tensor, clean: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Image-to-video's layout, as LTX2ImageToVideoPipeline samples and the trainer trains it:
    x_t [N, C, F, H, W] gets the clean first latent frame of `clean` [C, F, H, W] (in place),
    and the returned per-token noise levels [N, F*H*W] (frame-major) are 0 on its tokens."""
    n, _, f, h, w = x_t.shape
    x_t[:, :, 0] = clean[None, :, 0]
    levels = sigmas[:, None].expand(n, f * h * w).clone()
    levels[:, : h * w] = 0.0
    return levels


def _errors(
    pipe: Any,
    x_t: torch.Tensor,
    target: torch.Tensor,
    text: dict[str, torch.Tensor],
    prompt: int,
    sigmas: torch.Tensor,
    fps: float,
    layout: Layout | None = None,
) -> list[float]:
    """Velocity MSE per sigma for one clip under prompt `prompt`: one batched forward pass.
    `sigmas`: [N], or [N, F*H*W] per token (a clean first frame: its error is not counted);
    `layout`: conditioning latents appended after the target (keyframes, references)."""
    from evaluation.denoise_layout import conditioned_velocity
    from ltx.forward import predict_velocity

    n = len(sigmas)
    one = {k: v[prompt : prompt + 1].expand(n, *v.shape[1:]) for k, v in text.items()}
    if layout is not None:
        velocity, start = conditioned_velocity(pipe, layout, x_t, sigmas, one, fps)
        return ((velocity - target)[:, :, start:] ** 2).mean(dim=(1, 2, 3, 4)).tolist()
    levels = sigmas if sigmas.ndim == 1 else sigmas.max(dim=1).values  # audio's (isolated)
    velocity, _ = predict_velocity(pipe, x_t, None, one, sigmas, levels, fps=fps)
    start = 0 if sigmas.ndim == 1 else 1  # the conditioning frame is given, not predicted
    return ((velocity - target)[:, :, start:] ** 2).mean(dim=(1, 2, 3, 4)).tolist()
