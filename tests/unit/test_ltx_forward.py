"""predict_velocity reproduces the pipeline's own denoiser calls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import LTX2Pipeline

from ltx.encode import encode_prompts
from ltx.forward import noisy_latents, predict_velocity
from ltx.loading import load_components, load_pipeline
from ltx.sampling import guidance_kwargs, text_max_length


@pytest.fixture(scope="module")
def pipe(model_dir: Path):
    return load_pipeline(model_dir)


def _record_calls(pipe, prompt: str, guidance: float, width: int, frames: int) -> list:
    """(kwargs, outputs) of every transformer call the pipeline makes for one clip."""
    calls: list = []

    def hook(_module, _args, kwargs, out):
        calls.append(({k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()}, out))

    handle = pipe.transformer.register_forward_hook(hook, with_kwargs=True)
    try:
        pipe(
            prompt=prompt,
            negative_prompt="",
            width=width,
            height=64,
            num_frames=frames,
            frame_rate=24.0,
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(0),
            max_sequence_length=text_max_length(pipe),
            output_type="latent",
            return_dict=False,
            **guidance_kwargs(pipe, guidance),
        )
    finally:
        handle.remove()
    return calls


@pytest.mark.parametrize(("guidance", "width", "frames"), [(1.0, 64, 17), (3.0, 96, 9)])
def test_matches_every_step_of_the_pipeline(pipe, guidance: float, width: int, frames: int) -> None:
    text = encode_prompts(pipe, ["a red cat walks"])
    calls = _record_calls(pipe, "a red cat walks", guidance, width, frames)
    assert len(calls) == 3
    for kw, (video_out, audio_out) in calls:
        f, h, w, length = kw["num_frames"], kw["height"], kw["width"], kw["audio_num_frames"]
        # under CFG the batch is [negative, positive]; the positive half is the conditional call
        video = LTX2Pipeline._unpack_latents(kw["hidden_states"][-1:], f, h, w)
        audio = LTX2Pipeline._unpack_audio_latents(kw["audio_hidden_states"][-1:], length, 4)
        sigma = kw["timestep"][-1:] / 1000
        got_v, got_a = predict_velocity(pipe, video, audio, text, sigma, sigma, fps=kw["fps"])
        want_v = LTX2Pipeline._unpack_latents(video_out[-1:].float(), f, h, w)
        want_a = LTX2Pipeline._unpack_audio_latents(audio_out[-1:].float(), length, 4)
        assert got_v.shape == video.shape and got_a.shape == audio.shape
        torch.testing.assert_close(got_v, want_v, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_a, want_a, atol=1e-5, rtol=1e-5)


def test_works_from_components_batched_with_own_sigmas(model_dir: Path, pipe) -> None:
    parts = load_components(model_dir, ["transformer", "connectors"])
    text = encode_prompts(pipe, ["a", "b"])
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(2, 8, 5, 8, 8, generator=g), torch.randn(2, 2, 9, 4, generator=g)
    sv, sa = torch.tensor([0.3, 0.9]), torch.tensor([0.5, 0.1])
    v, a = predict_velocity(parts, video, audio, text, sv, sa, fps=24.0)
    one = {k: t[1:] for k, t in text.items()}
    v1, a1 = predict_velocity(parts, video[1:], audio[1:], one, sv[1:], sa[1:], fps=24.0)
    torch.testing.assert_close(v[1:], v1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a[1:], a1, atol=1e-5, rtol=1e-5)
    v2, _ = predict_velocity(parts, video, audio, text, sv, torch.tensor([0.6, 0.2]), fps=24.0)
    assert not torch.allclose(v, v2)  # the audio stream's noise level reaches the video


def test_video_only_ignores_audio(pipe) -> None:
    text = encode_prompts(pipe, ["a"])
    video = torch.randn(1, 8, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    v, a = predict_velocity(
        pipe, video, None, text, torch.tensor([0.5]), torch.tensor([0.5]), fps=24.0
    )
    assert a is None and v.shape == video.shape and torch.isfinite(v).all()


def test_gradients_reach_lora_only(model_dir: Path) -> None:
    from ltx.lora import add_lora

    parts = load_components(model_dir, ["transformer", "connectors", "text_encoder", "tokenizer"])
    parts["transformer"].requires_grad_(False)
    parts["connectors"].requires_grad_(False)
    add_lora(parts["transformer"], rank=2, alpha=2, dropout=0.0, targets="video_attention")
    text = encode_prompts(parts, ["a"])
    x0 = torch.randn(1, 8, 5, 8, 8)
    xt, target = noisy_latents(x0, torch.randn_like(x0), torch.tensor([0.4]))
    v, _ = predict_velocity(
        parts, xt, None, text, torch.tensor([0.4]), torch.tensor([0.4]), fps=24.0
    )
    torch.nn.functional.mse_loss(v, target).backward()
    grads = {n for n, p in parts["transformer"].named_parameters() if p.grad is not None}
    assert grads and all("lora_B" in n or "lora_A" in n for n in grads)


def test_noisy_latents_is_flow_matching() -> None:
    x0, eps = torch.ones(2, 3), torch.zeros(2, 3)
    xt, target = noisy_latents(x0, eps, torch.tensor([0.0, 1.0]))
    assert torch.equal(xt, torch.tensor([[1.0] * 3, [0.0] * 3]))
    assert torch.equal(target, -x0)
