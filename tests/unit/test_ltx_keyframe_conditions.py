"""Keyframe training (trainer.strategy=keyframes) lays out its sequence exactly as diffusers'
LTX2ConditionPipeline does at inference for a first and a last image (conditions at latent
index 0 and -1): the pipeline's own `prepare_latents` runs beside our preprocessing and
strategy on the tiny model, and the appended tokens' positions, the clean (timestep 0) tokens
and their latents are compared. The loss covers only the generated tokens."""

from __future__ import annotations

import inspect
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import LTX2Pipeline
from diffusers.pipelines.ltx2.pipeline_ltx2_condition import (
    LTX2ConditionPipeline,
    LTX2VideoCondition,
)

from ltx.encode import encode_prompts, encode_video
from ltx.keyframes import keyframe_image
from ltx.tiny_build import build_tiny_pipeline
from trainer.cache import compact_text, text_inputs
from trainer.config import TrainerConfig
from trainer.data import Batch
from trainer.strategies import get_strategy, interior_picks, last_frame_coords

FPS = 24.0


@pytest.fixture(scope="module")
def tiny() -> tuple[LTX2Pipeline, np.ndarray]:
    pipe = build_tiny_pipeline(0)
    t, s = pipe.vae.temporal_compression_ratio, pipe.vae.spatial_compression_ratio
    frames = 4 * t + 1, 4 * s, 6 * s  # 5 latent frames of 4 x 6 tokens
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, size=(*frames, 3), dtype=np.uint8)
    return pipe, video


def pipeline_layout(pipe: LTX2Pipeline, video: np.ndarray):
    """What the condition pipeline prepares for the first and last frame as keyframe images."""
    cond = LTX2ConditionPipeline(**pipe.components)
    conditions = [
        LTX2VideoCondition(frames=video[0], index=0),  # crf None: the model's default
        LTX2VideoCondition(frames=video[-1], index=-1),
    ]
    f, h, w, _ = video.shape
    _, mask, clean, coords = cond.prepare_latents(
        conditions,
        batch_size=1,
        num_channels_latents=pipe.transformer.config.in_channels,
        height=h,
        width=w,
        num_frames=f,
        frame_rate=FPS,
        dtype=torch.float32,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    return mask[0, :, 0], clean, coords


def test_keyframe_layout_equals_the_condition_pipeline(tiny) -> None:
    pipe, video = tiny
    mask, clean, coords = pipeline_layout(pipe, video)
    # ours: what preprocess caches (trainer/cache.py) and the strategy appends
    latents = encode_video(pipe.vae, video)  # [C, F, H, W]
    _, f, h, w = latents.shape
    first, last = (
        encode_video(pipe.vae, keyframe_image(frame, "2.0")[None])
        for frame in (video[0], video[-1])
    )
    ours = last_frame_coords(pipe.transformer, 1, f, h, w, FPS)
    assert torch.equal(coords, ours)  # [1, 3, h*w, 2]: seconds and pixels
    conditioned = torch.zeros(f * h * w + h * w)
    conditioned[: h * w] = 1.0  # the first frame's tokens, overwritten in place
    conditioned[f * h * w :] = 1.0  # the appended last frame
    assert torch.equal(mask, conditioned)
    pack = LTX2Pipeline._pack_latents  # [1, tokens, C], patch 1
    torch.testing.assert_close(clean[:, : h * w], pack(first[None], 1, 1), rtol=0, atol=1e-6)
    torch.testing.assert_close(clean[:, f * h * w :], pack(last[None], 1, 1), rtol=0, atol=1e-6)


def test_the_strategy_feeds_the_transformer_that_layout(tiny) -> None:
    """The transformer call of a keyframes step: tokens [video | last image], timestep 0 exactly
    on the pipeline's conditioned tokens, positions [video grid | the pipeline's keyframe]."""
    pipe, video = tiny
    mask, clean, coords = pipeline_layout(pipe, video)
    batch = keyframe_batch(pipe, video)
    seen = {}
    hook = pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.update(kwargs), with_kwargs=True
    )
    try:
        step_loss(pipe, batch)
    finally:
        hook.remove()
    _, _, f, h, w = batch.video.shape
    assert seen["hidden_states"].shape[1] == mask.shape[0] == f * h * w + h * w
    assert torch.equal(seen["timestep"][0] == 0, mask == 1)
    assert torch.equal(seen["video_coords"][:, :, f * h * w :], coords)
    torch.testing.assert_close(
        seen["hidden_states"][:, mask == 1], clean[:, mask == 1], rtol=0, atol=1e-6
    )


def test_the_loss_covers_only_generated_tokens(tiny) -> None:
    """Changing the transformer's output on the conditioned tokens leaves the loss as it is;
    on one generated token (the last latent frame, which is generated) it does not."""
    pipe, video = tiny
    batch = keyframe_batch(pipe, video)
    _, _, f, h, w = batch.video.shape
    base = step_loss(pipe, batch)

    def loss_with(positions: slice) -> float:
        def shift(_m, _a, output):
            out = output[0].clone()
            out[:, positions] += 100.0
            return (out, *output[1:])

        handle = pipe.transformer.register_forward_hook(shift)
        try:
            return step_loss(pipe, batch)
        finally:
            handle.remove()

    assert loss_with(slice(0, h * w)) == base  # the first frame, conditioned in place
    assert loss_with(slice(f * h * w, None)) == base  # the appended last image
    assert loss_with(slice((f - 1) * h * w, (f - 1) * h * w + 1)) > base + 1


def keyframe_batch(pipe: LTX2Pipeline, video: np.ndarray) -> Batch:
    latents = encode_video(pipe.vae, video)[None]
    first, last = (
        encode_video(pipe.vae, keyframe_image(frame, "2.0")[None])[None]
        for frame in (video[0], video[-1])
    )
    text = text_inputs(compact_text(encode_prompts(pipe, ["a mascot waves"])))
    return replace(Batch(latents, None, text, FPS), keyframes=(first, last))


def step_loss(pipe: LTX2Pipeline, batch: Batch, cfg: TrainerConfig | None = None) -> float:
    denoiser = {"transformer": pipe.transformer, "connectors": pipe.connectors}
    sigma = torch.tensor([0.6])
    with torch.no_grad():
        loss = get_strategy("keyframes").loss(
            denoiser,
            pipe.scheduler,
            batch,
            cfg or TrainerConfig(),
            torch.Generator().manual_seed(0),
            sigmas=(sigma, sigma),
        )
    return loss.item()


@pytest.mark.parametrize("factor", [1, 2])
def test_reference_positions_equal_the_ic_lora_pipeline(tiny, factor: int) -> None:
    """IC-LoRA references at 1/factor of the target's size: the positions the strategy gives
    their tokens equal those diffusers' LTX2InContextPipeline computes for
    `reference_downscale_factor=factor` (its own encoding of the same reference video)."""
    from diffusers import LTX2InContextPipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition

    from trainer.strategies import reference_coords

    pipe, video = tiny
    f, height, width, _ = video.shape
    wanted = inspect.signature(LTX2InContextPipeline.__init__).parameters
    ic = LTX2InContextPipeline(**{k: v for k, v in pipe.components.items() if k in wanted})
    latents, coords, _, counts = ic._encode_reference_conditions(
        [LTX2ReferenceCondition(frames=video)],
        height=height,
        width=width,
        num_frames=f,
        reference_downscale_factor=factor,
        frame_rate=FPS,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )
    s = pipe.vae.spatial_compression_ratio
    target = (height // s, width // s)
    lf = (f - 1) // pipe.vae.temporal_compression_ratio + 1
    reference = torch.zeros(1, latents.shape[-1], lf, target[0] // factor, target[1] // factor)
    assert counts == [reference[0, 0].numel()]
    assert torch.equal(reference_coords(pipe.transformer, reference, target, FPS), coords)


# ----------------------------------------------------------------- interior keyframes


def interior_batch(pipe: LTX2Pipeline, video: np.ndarray) -> Batch:
    """The keyframe batch plus what preprocess.keyframes=first_last_interior caches."""
    from trainer.cache_keyframes import interior_keyframes

    batch = keyframe_batch(pipe, video)
    interior = interior_keyframes(pipe.vae, video, "2.0")[None]
    return replace(batch, keyframes=(*batch.keyframes, interior))


def testinterior_keyframes_are_placed_as_the_condition_pipeline_places_them(tiny) -> None:
    """trainer.keyframe_interior=2: the step draws two interior latent indices; the condition
    pipeline given the first and last frames plus, at each drawn index k, the pixel frame
    (k - 1) * temporal + 1 as an image at latent index k, prepares exactly the tokens,
    positions and clean (timestep 0) tokens the strategy feeds the transformer."""
    pipe, video = tiny
    batch = interior_batch(pipe, video)
    _, _, f, h, w = batch.video.shape
    picks = interior_picks(f, 2, True, torch.Generator().manual_seed(0))
    assert len(picks) == 2 and all(0 < k < f - 1 for k in picks)
    t = pipe.vae.temporal_compression_ratio
    cond = LTX2ConditionPipeline(**pipe.components)
    conditions = [
        LTX2VideoCondition(frames=video[0], index=0),
        LTX2VideoCondition(frames=video[-1], index=-1),
        *(LTX2VideoCondition(frames=video[(k - 1) * t + 1], index=k) for k in picks),
    ]
    _, mask, clean, coords = cond.prepare_latents(
        conditions,
        batch_size=1,
        num_channels_latents=pipe.transformer.config.in_channels,
        height=video.shape[1],
        width=video.shape[2],
        num_frames=video.shape[0],
        frame_rate=FPS,
        dtype=torch.float32,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    mask = mask[0, :, 0]
    seen = {}
    hook = pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.update(kwargs), with_kwargs=True
    )
    try:
        step_loss(pipe, batch, TrainerConfig(keyframe_interior=2))
    finally:
        hook.remove()
    n = f * h * w
    assert seen["hidden_states"].shape[1] == mask.shape[0] == n + 3 * h * w
    assert torch.equal(seen["timestep"][0] == 0, mask == 1)
    assert torch.equal(seen["video_coords"][:, :, n:], coords)
    torch.testing.assert_close(
        seen["hidden_states"][:, mask == 1], clean[:, mask == 1], rtol=0, atol=1e-6
    )


def testinterior_keyframes_stay_out_of_the_loss(tiny) -> None:
    """Shifting the output on the appended interior images leaves the loss; the video frames
    under them are generated, so shifting those changes it."""
    pipe, video = tiny
    batch = interior_batch(pipe, video)
    _, _, f, h, w = batch.video.shape
    cfg = TrainerConfig(keyframe_interior=2)
    base = step_loss(pipe, batch, cfg)
    k, _ = interior_picks(f, 2, True, torch.Generator().manual_seed(0))

    def loss_with(positions: slice) -> float:
        def shift(_m, _a, output):
            out = output[0].clone()
            out[:, positions] += 100.0
            return (out, *output[1:])

        handle = pipe.transformer.register_forward_hook(shift)
        try:
            return step_loss(pipe, batch, cfg)
        finally:
            handle.remove()

    assert loss_with(slice(f * h * w, None)) == base  # last + two interior images
    assert loss_with(slice(k * h * w, k * h * w + 1)) > base + 1  # frame k itself: generated


def testinterior_keyframes_need_them_in_the_cache(tiny) -> None:
    from stagekit.errors import UserError

    pipe, video = tiny
    with pytest.raises(UserError, match=r"preprocess\.keyframes=first_last_interior"):
        step_loss(pipe, keyframe_batch(pipe, video), TrainerConfig(keyframe_interior=1))
