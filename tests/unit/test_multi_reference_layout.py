"""Multi-reference IC-LoRA training (trainer.strategy=multi_reference) lays out its sequence as
diffusers' LTX2InContextPipeline does for a list of reference conditions (a clip and a still):
the pipeline's own `prepare_latents` runs beside our preprocessing (trainer.cache_references)
and the strategy on the tiny model, and the appended tokens' positions, the clean (timestep 0)
tokens, their latents and the per-reference token counts are compared. The loss covers only
the target's tokens."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from diffusers import LTX2InContextPipeline, LTX2Pipeline
from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition

from ltx.encode import encode_prompts, encode_video
from ltx.tiny_build import build_tiny_pipeline
from trainer.cache import compact_text, text_inputs
from trainer.cache_references import reference_keys, reference_tensors
from trainer.config import TrainerConfig
from trainer.data import Batch
from trainer.strategies import get_strategy

FPS = 24.0


@pytest.fixture(scope="module")
def tiny() -> tuple[LTX2Pipeline, np.ndarray, list[np.ndarray]]:
    """The tiny pipeline, a 5-latent-frame 4x6-token target, and a reference sheet of a
    3-latent-frame clip and a still (1 frame) of the target's size."""
    pipe = build_tiny_pipeline(0)
    t, s = pipe.vae.temporal_compression_ratio, pipe.vae.spatial_compression_ratio
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, size=(4 * t + 1, 4 * s, 6 * s, 3), dtype=np.uint8)
    clip = rng.integers(0, 256, size=(2 * t + 1, 4 * s, 6 * s, 3), dtype=np.uint8)
    still = rng.integers(0, 256, size=(1, 4 * s, 6 * s, 3), dtype=np.uint8)
    return pipe, video, [clip, still]


def pipeline_layout(pipe: LTX2Pipeline, video: np.ndarray, refs: list[np.ndarray], factor: int):
    """What LTX2InContextPipeline prepares for `refs` as reference conditions (strength 1).
    Frames go in as float [0, 1]: its `preprocess_video` scales numpy input as such (a uint8
    array would come out in [-1, 509]), as `ltx.sampling` passes them."""
    wanted = inspect.signature(LTX2InContextPipeline.__init__).parameters
    ic = LTX2InContextPipeline(**{k: v for k, v in pipe.components.items() if k in wanted})
    f, h, w, _ = video.shape
    _, mask, clean, coords, n_ref, cross, counts = ic.prepare_latents(
        None,
        reference_conditions=[LTX2ReferenceCondition(frames=r / np.float32(255)) for r in refs],
        reference_downscale_factor=factor,
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
    assert cross is None  # strength 1: no attention mask, every token attends to every other
    assert n_ref == sum(counts)  # the references are the sequence's last tokens
    return mask[0, :, 0], clean, coords, counts


def our_references(pipe: LTX2Pipeline, refs: list[np.ndarray], factor: int) -> list[torch.Tensor]:
    """What preprocess caches for the reference files, each [1, C, f, h, w]."""
    tensors = reference_tensors(pipe.vae, refs, factor)
    return [tensors[k][None] for k in reference_keys(tensors)]


@pytest.mark.parametrize("factor", [1, 2])
def test_multi_reference_layout_equals_the_ic_lora_pipeline(tiny, factor: int) -> None:
    """Tokens [target | clip | still], timestep 0 exactly on the pipeline's conditioned
    (reference) tokens, positions [target grid | each reference's grid, spatially x factor];
    the reference latents themselves equal the pipeline's at full size (at half size the
    pipeline resizes bilinearly, preprocess by area: positions and counts still agree)."""
    pipe, video, refs = tiny
    mask, clean, coords, counts = pipeline_layout(pipe, video, refs, factor)
    references = our_references(pipe, refs, factor)
    latents = encode_video(pipe.vae, video)[None]
    _, _, f, h, w = latents.shape
    n = f * h * w
    assert counts == [r[0, 0].numel() for r in references]  # 3x4x6 / factor^2, then 1x4x6 / f^2
    assert counts[0] == 3 * counts[1]  # three latent frames, one

    seen = capture(pipe, Batch(latents, None, prompt(pipe), FPS, references=tuple(references)))
    assert seen["hidden_states"].shape[1] == mask.shape[0] == n + sum(counts)
    assert torch.equal(seen["timestep"][0] == 0, mask == 1)
    assert torch.equal(seen["video_coords"][:, :, n:], coords)  # [1, 3, refs, 2]
    assert torch.equal(
        seen["video_coords"][:, :, :n],
        pipe.transformer.rope.prepare_video_coords(1, f, h, w, torch.device("cpu"), fps=FPS),
    )
    if factor == 1:
        torch.testing.assert_close(seen["hidden_states"][:, n:], clean[:, n:], rtol=0, atol=1e-5)


def test_the_loss_covers_only_the_target_tokens(tiny) -> None:
    """Shifting the transformer's output on the appended reference tokens leaves the loss as it
    is; on one target token it does not; another reference sheet gives another loss."""
    pipe, video, refs = tiny
    references = tuple(our_references(pipe, refs, 1))
    batch = Batch(
        encode_video(pipe.vae, video)[None], None, prompt(pipe), FPS, references=references
    )
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

    assert loss_with(slice(f * h * w, None)) == base
    assert loss_with(slice(f * h * w - 1, f * h * w)) > base + 1
    swapped = Batch(batch.video, None, batch.text, FPS, references=(references[0], -references[1]))
    assert step_loss(pipe, swapped) != base


def test_gradients_reach_the_adapter_only_through_the_target(tiny) -> None:
    """The loss's gradient with respect to the reference tokens' output is exactly zero and
    nonzero on the target's: the references condition, they are never a target."""
    pipe, video, refs = tiny
    references = tuple(our_references(pipe, refs, 1))
    batch = Batch(
        encode_video(pipe.vae, video)[None], None, prompt(pipe), FPS, references=references
    )
    _, _, f, h, w = batch.video.shape
    kept = {}

    def keep(_m, _a, output):
        out = output[0]
        out.retain_grad()
        kept["out"] = out
        return output

    handle = pipe.transformer.register_forward_hook(keep)
    try:
        loss = get_strategy("multi_reference").loss(
            {"transformer": pipe.transformer, "connectors": pipe.connectors},
            pipe.scheduler,
            batch,
            TrainerConfig(),
            torch.Generator().manual_seed(0),
            sigmas=(torch.tensor([0.6]), torch.tensor([0.6])),
        )
        loss.backward()
    finally:
        handle.remove()
        pipe.transformer.zero_grad(set_to_none=True)
    grad = kept["out"].grad[0]  # [tokens, C]
    assert torch.all(grad[f * h * w :] == 0)
    assert grad[: f * h * w].abs().sum(dim=-1).gt(0).all()


def prompt(pipe: LTX2Pipeline) -> dict[str, torch.Tensor]:
    return text_inputs(compact_text(encode_prompts(pipe, ["a mascot waves"])))


def capture(pipe: LTX2Pipeline, batch: Batch) -> dict:
    seen: dict = {}
    hook = pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.update(kwargs), with_kwargs=True
    )
    try:
        step_loss(pipe, batch)
    finally:
        hook.remove()
    return seen


def step_loss(pipe: LTX2Pipeline, batch: Batch) -> float:
    denoiser = {"transformer": pipe.transformer, "connectors": pipe.connectors}
    sigma = torch.tensor([0.6])
    with torch.no_grad():
        loss = get_strategy("multi_reference").loss(
            denoiser,
            pipe.scheduler,
            batch,
            TrainerConfig(),
            torch.Generator().manual_seed(0),
            sigmas=(sigma, sigma),
        )
    return loss.item()
