"""LTX-2.5's keyframe marker: a learned embedding added (right after `proj_in`) to the video
tokens whose latent frame encodes a single pixel frame.

Lightricks' reference inference marks the first latent frame's tokens unconditionally, in every
mode, and leaves appended conditioning tokens (IC-LoRA references, keyframe conditions)
unmarked (ltx-core `tools.py` L158-196, `conditioning/mask_utils.py` L76-107). diffusers 0.42.1
applies the marker only when a caller passes `video_keyframes_mask`, which `LTX2Pipeline` never
does; so training (`ltx.forward`) and our renders (`marked_first_frame`) both pass the same mask,
and a LoRA is trained on exactly the tokens it meets at inference.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def uses_keyframe_marker(transformer: Any) -> bool:
    """True for bases built with the marker (LTX-2.5)."""
    return bool(getattr(transformer.config, "use_keyframes_abs_pos_embedding", False))


def first_frame_mask(
    batch: int, tokens: int, height: int, width: int, device: Any = None
) -> torch.Tensor:
    """[B, tokens, 1] float32: 1 on the first latent frame's `height * width` tokens (packed
    frame-major, patch 1), 0 on later frames and on any appended tokens."""
    mask = torch.zeros(batch, tokens, 1, device=device)
    mask[:, : height * width] = 1.0
    return mask


def marker_kwargs(transformer: Any, batch: int, tokens: int, height: int, width: int) -> dict:
    """`video_keyframes_mask=...` for a transformer call, or nothing for bases without it."""
    if not uses_keyframe_marker(transformer):
        return {}
    device = next(transformer.parameters()).device
    return {"video_keyframes_mask": first_frame_mask(batch, tokens, height, width, device)}


@contextmanager
def marked_first_frame(transformer: Any) -> Iterator[None]:
    """While active, every transformer call without a mask (LTX2Pipeline's) gets the
    first-frame mask, as the reference inference builds it."""
    if not uses_keyframe_marker(transformer):
        yield
        return

    def add_mask(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if kwargs.get("video_keyframes_mask") is None:
            hidden = kwargs["hidden_states"]
            kwargs["video_keyframes_mask"] = first_frame_mask(
                hidden.shape[0], hidden.shape[1], kwargs["height"], kwargs["width"], hidden.device
            )
        return args, kwargs

    handle = transformer.register_forward_pre_hook(add_mask, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def keyframe_coords(
    transformer_config: Any,
    vae_scale: tuple[int, int],
    batch: int,
    latent_index: int,
    latent_frames: int,
    height: int,
    width: int,
    fps: float,
    pixel_frames: int = 1,
) -> torch.Tensor:
    """Positions [B, 3, tokens, 2] (start, end; time in seconds, space in pixels) of a keyframe
    condition appended after the video's tokens, as the condition pipeline places one given at
    latent index `latent_index` (diffusers 0.42.1 `LTX2ConditionPipeline.prepare_latents`, which
    follows ltx-core's `VideoConditionByKeyframeIndex`): its `latent_frames` x `height` x
    `width` latent grid scaled to pixels by the VAE's (temporal, spatial) `vae_scale`, without
    the first frame's causal shift, moved to pixel frame (latent_index - 1) * temporal + 1; a
    single pixel frame spans one pixel timestep. Checked against the pipeline's own method in
    tests/unit/test_ltx_keyframes.py."""
    pt, ps = transformer_config.patch_size_t, transformer_config.patch_size
    temporal, spatial = vae_scale
    axes = [
        torch.arange(0, n, step, dtype=torch.float32)
        for n, step in ((latent_frames, pt), (height, ps), (width, ps))
    ]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # [3, F, H, W]
    ends = grid + torch.tensor([pt, ps, ps], dtype=torch.float32).view(3, 1, 1, 1)
    coords = torch.stack([grid, ends], dim=-1).flatten(1, 3)  # [3, tokens, 2]
    coords = coords * torch.tensor([temporal, spatial, spatial], dtype=torch.float32).view(3, 1, 1)
    coords[0] += (latent_index - 1) * temporal + 1
    if pixel_frames == 1:
        coords[0, :, 1] = coords[0, :, 0] + 1
    coords[0] /= fps
    return coords.unsqueeze(0).expand(batch, -1, -1, -1)


def keyframe_image(frame: Any, ltx_version: str) -> Any:
    """A uint8 [H, W, 3] frame as the condition pipeline prepares a keyframe image: H.264
    re-compressed at the version's image CRF (33 through LTX-2.3, 18 for 2.5: diffusers 0.42.1
    `pipelines/ltx2/utils.py` `resolve_default_image_crf`, after ltx-pipelines), by diffusers'
    own `apply_image_conditioning_crf`."""
    from diffusers.pipelines.ltx2.utils import (
        DEFAULT_IMAGE_CRF,
        LTX2_5_IMAGE_CRF,
        apply_image_conditioning_crf,
    )

    crf = LTX2_5_IMAGE_CRF if ltx_version == "2.5" else DEFAULT_IMAGE_CRF
    return apply_image_conditioning_crf(frame, crf)


def keyframe_latent(vae: Any, frame: Any, ltx_version: str) -> torch.Tensor:
    """A uint8 [H, W, 3] frame as a keyframe image's latent [C, 1, H', W']: re-compressed
    (`keyframe_image`) and encoded on its own, as the condition pipeline encodes each image.
    The trainer's cache and the evaluation's held-out denoising both make them here."""
    import numpy as np

    from ltx.encode import encode_video

    image = keyframe_image(frame, ltx_version)
    return encode_video(vae, torch.from_numpy(np.asarray(image)[None]))
