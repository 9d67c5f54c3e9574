"""Training strategies: what each feeds the transformer and what its loss covers."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ltx.loading import load_components
from stagekit.errors import UserError
from trainer.config import TrainerConfig
from trainer.data import collate, load_split
from trainer.strategies import STRATEGIES, get_strategy


@pytest.fixture(scope="module")
def setup(cache_dir, model_path):
    comps = load_components(model_path, ["transformer", "connectors", "scheduler"])
    denoiser = {"transformer": comps["transformer"], "connectors": comps["connectors"]}
    batch = collate(load_split(cache_dir, "train")[:1])
    # a control latent of the clip's shape (the cache holds one with preprocess.reference=edges),
    # and keyframe latents of one frame (the cache holds them with preprocess.keyframes=first_last)
    frame = batch.video[:, :, :1]
    # a reference sheet (preprocess.reference=files): a clip-long reference and a still
    sheet = (batch.video.flip(-2) * 0.5, frame.flip(-1))
    batch = replace(
        batch,
        reference=batch.video.flip(-1) * 0.5,
        keyframes=(frame, frame * 0.5),
        references=sheet,
    )
    return denoiser, comps["scheduler"], batch


def captured_call(denoiser, strategy, scheduler, batch, seed=0):
    """Run one loss; return it and the kwargs the transformer received."""
    seen = {}
    hook = denoiser["transformer"].register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.update(kwargs), with_kwargs=True
    )
    try:
        loss = strategy.loss(
            denoiser, scheduler, batch, TrainerConfig(), torch.Generator().manual_seed(seed)
        )
    finally:
        hook.remove()
    return loss, seen


def test_registry_names_every_mode() -> None:
    assert set(STRATEGIES) == {
        "audio_video",
        "text_to_video",
        "text_to_audio",
        "image_to_video",
        "reference_video",
        "multi_reference",
        "keyframes",
    }
    assert all(get_strategy(n).name == n for n in STRATEGIES)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_loss_is_a_finite_scalar(setup, name) -> None:
    denoiser, scheduler, batch = setup
    loss, seen = captured_call(denoiser, get_strategy(name), scheduler, batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    b, c, f, h, w = batch.video.shape
    # + the reference's, or the appended last image's
    appended = {"reference_video": f * h * w, "multi_reference": (f + 1) * h * w}
    tokens = f * h * w + {**appended, "keyframes": h * w}.get(name, 0)
    assert seen["hidden_states"].shape == (b, tokens, c)  # packed [B, F*H*W, C]


def test_joint_mode_feeds_real_audio_and_text_mode_isolates(setup) -> None:
    denoiser, scheduler, batch = setup
    _, joint = captured_call(denoiser, get_strategy("audio_video"), scheduler, batch)
    _, video = captured_call(denoiser, get_strategy("text_to_video"), scheduler, batch)
    _, c_a, length, mel = batch.audio.shape
    assert joint["audio_hidden_states"].shape == (1, length, c_a * mel)
    assert not joint["isolate_modalities"]
    assert video["audio_hidden_states"].shape[1] == 1 and video["isolate_modalities"]
    # independent noise levels for the two streams
    assert not torch.equal(joint["timestep"], joint["audio_timestep"])


def test_text_mode_ignores_cached_audio(setup) -> None:
    denoiser, scheduler, batch = setup
    t2v = get_strategy("text_to_video")
    a, _ = captured_call(denoiser, t2v, scheduler, batch)
    b, _ = captured_call(denoiser, t2v, scheduler, replace(batch, audio=batch.audio * 3))
    assert torch.equal(a, b)


def test_image_mode_keeps_the_first_frame_clean_at_timestep_zero(setup) -> None:
    denoiser, scheduler, batch = setup
    _, seen = captured_call(denoiser, get_strategy("image_to_video"), scheduler, batch)
    b, c, f, h, w = batch.video.shape
    t = seen["timestep"]
    assert t.shape == (b, f * h * w)
    assert torch.all(t[:, : h * w] == 0) and torch.all(t[:, h * w :] > 0)
    first = batch.video[:, :, 0].permute(0, 2, 3, 1).reshape(b, h * w, c)
    assert torch.allclose(seen["hidden_states"][:, : h * w], first)


def test_reference_mode_appends_clean_reference_tokens_left_out_of_the_loss(setup) -> None:
    denoiser, scheduler, batch = setup
    ic = get_strategy("reference_video")
    loss, seen = captured_call(denoiser, ic, scheduler, batch)
    b, c, f, h, w = batch.video.shape
    n = f * h * w
    # [target | reference] tokens, the reference clean (its packed latents as they are)
    assert seen["hidden_states"].shape == (b, 2 * n, c)
    reference = batch.reference.permute(0, 2, 3, 4, 1).reshape(b, n, c)
    assert torch.allclose(seen["hidden_states"][:, n:], reference)
    t = seen["timestep"]
    assert t.shape == (b, 2 * n)
    assert torch.all(t[:, n:] == 0) and torch.all(t[:, :n] > 0)
    assert torch.all(t[:, :n] == t[:, :1])  # one level for every target token
    # positions: the reference lies on the target's own grid, as LTX2InContextPipeline puts it
    coords = seen["video_coords"]
    assert coords.shape[2] == 2 * n and torch.equal(coords[:, :, :n], coords[:, :, n:])
    # the model attends to the reference: another reference gives another loss
    other, _ = captured_call(denoiser, ic, scheduler, replace(batch, reference=-batch.reference))
    assert not torch.equal(loss, other)


def test_reference_mode_without_reference_latents_says_what_to_run(setup) -> None:
    denoiser, scheduler, batch = setup
    with pytest.raises(UserError, match=r"preprocess\.reference=edges"):
        captured_call(
            denoiser, get_strategy("reference_video"), scheduler, replace(batch, reference=None)
        )


def test_multi_reference_appends_each_reference_clean_in_order(setup) -> None:
    """[target | reference 0 | reference 1] tokens, each reference packed as it is at
    timestep 0 on its own grid from time 0 (a still: one frame), the target's tokens noised."""
    denoiser, scheduler, batch = setup
    loss, seen = captured_call(denoiser, get_strategy("multi_reference"), scheduler, batch)
    b, c, f, h, w = batch.video.shape
    n, clip, still = f * h * w, *batch.references
    packed = [r.permute(0, 2, 3, 4, 1).reshape(b, -1, c) for r in (clip, still)]
    assert torch.allclose(seen["hidden_states"][:, n:], torch.cat(packed, dim=1))
    t = seen["timestep"]
    assert torch.all(t[:, n:] == 0) and torch.all(t[:, :n] > 0)
    coords = seen["video_coords"]
    assert torch.equal(coords[:, :, n : 2 * n], coords[:, :, :n])  # the clip: the target grid
    assert torch.equal(coords[:, :, 2 * n :], coords[:, :, : h * w])  # the still: frame 0's
    swapped = replace(batch, references=(clip, -still))
    other, _ = captured_call(denoiser, get_strategy("multi_reference"), scheduler, swapped)
    assert not torch.equal(loss, other)


def test_multi_reference_without_reference_files_says_what_to_run(setup) -> None:
    denoiser, scheduler, batch = setup
    with pytest.raises(UserError, match=r"preprocess\.reference=files"):
        captured_call(
            denoiser, get_strategy("multi_reference"), scheduler, replace(batch, references=None)
        )
