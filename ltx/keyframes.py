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
