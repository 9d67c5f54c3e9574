"""encode_*: the same text, video and audio spaces the pipeline's denoiser works in."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.pipelines.ltx2 import LTX2TextConnectors

from ltx.encode import (
    denormalize_video,
    encode_audio,
    encode_prompts,
    encode_video,
    gemma_prompt_embeds,
    log_mel,
    mel_filterbank,
    resample,
    waveform_to_mel,
)
from ltx.forward import connect_text
from ltx.loading import load_components, load_pipeline
from ltx.sampling import text_max_length
from stagekit.errors import UserError

# librosa 0.11.0 `filters.mel(sr=16000, n_fft=1024, n_mels=16, norm="slaney")`, [freq, mel]
LIBROSA_MEL_16 = {
    (3, 0): 0.001488909125328064,
    (12, 0): 0.0053161680698394775,
    (37, 2): 0.004180396907031536,
    (90, 6): 0.002217828994616866,
    (200, 11): 0.001444673747755587,
    (310, 13): 0.0008931035408750176,
    (470, 15): 0.0004001679189968854,
}


@pytest.fixture(scope="module")
def pipe(model_dir: Path):
    pipe = load_pipeline(model_dir)
    # Non-trivial statistics, so the tests see the normalisation (the tiny VAEs have 0 / 1).
    g = torch.Generator().manual_seed(0)
    for vae in (pipe.vae, pipe.audio_vae):
        vae.latents_mean.copy_(torch.randn(vae.latents_mean.shape, generator=g))
        vae.latents_std.copy_(torch.rand(vae.latents_std.shape, generator=g) + 0.5)
    return pipe


def _frames(frames: int = 17, height: int = 64, width: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def test_prompt_features_match_the_pipelines_connector_inputs(pipe) -> None:
    prompts = ["a red cat", "  a dog on a very long walk through the park  ", "", "x"] * 2
    text = encode_prompts(pipe, prompts)
    assert set(text) == {"prompt_features", "prompt_attention_mask"}
    assert text["prompt_features"].shape == (8, 128, 32)
    embeds, mask = pipe.encode_prompt(
        prompts, do_classifier_free_guidance=False, max_sequence_length=text_max_length(pipe)
    )[:2]
    expected = pipe.connectors(embeds, mask, padding_side="left")
    for got, want in zip(connect_text(pipe.connectors, text), expected, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(text["prompt_attention_mask"], mask)


def test_prompts_encode_alone_as_in_a_batch(model_dir: Path, pipe) -> None:
    parts = load_components(model_dir, ["text_encoder", "tokenizer", "connectors"])
    both = encode_prompts(parts, ["a red cat", "a blue dog"])
    one = encode_prompts(parts, ["a blue dog"])
    torch.testing.assert_close(both["prompt_features"][1:], one["prompt_features"])
    assert not torch.allclose(both["prompt_features"][0], both["prompt_features"][1])


def test_ltx23_connectors_get_separate_audio_features(pipe) -> None:
    torch.manual_seed(0)
    cfg = dict(pipe.connectors.config)
    cfg.update(per_modality_projections=True, video_hidden_dim=32, audio_hidden_dim=32)
    connectors = LTX2TextConnectors(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    embeds, mask = gemma_prompt_embeds(pipe, ["a red cat", "b"], 128)
    parts = {
        "tokenizer": pipe.tokenizer,
        "text_encoder": pipe.text_encoder,
        "connectors": connectors,
    }
    text = encode_prompts(parts, ["a red cat", "b"])
    assert "audio_prompt_features" in text
    expected = connectors(embeds, mask, padding_side="left")
    for got, want in zip(connect_text(connectors, text), expected, strict=True):
        torch.testing.assert_close(got, want)


def test_video_latents_live_where_the_pipeline_denoises(pipe) -> None:
    frames = _frames()
    latents = encode_video(pipe.vae, frames)
    assert latents.shape == (8, 9, 8, 12)
    x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    raw = pipe.vae.encode(x).latent_dist.mode()
    # what the pipeline decodes from is exactly the raw latent ...
    torch.testing.assert_close(denormalize_video(pipe.vae, latents), raw[0])
    # ... and the latents it would start denoising from, given `raw`, are ours, packed
    packed = pipe.prepare_latents(latents=raw, dtype=torch.float32, device="cpu", noise_scale=0.0)
    torch.testing.assert_close(packed, pipe._pack_latents(latents[None]))


def test_video_posterior_sample_is_seeded(pipe) -> None:
    a = encode_video(pipe.vae, _frames(9), generator=torch.Generator().manual_seed(1))
    b = encode_video(pipe.vae, _frames(9), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, encode_video(pipe.vae, _frames(9)))


def test_video_that_does_not_fit_the_vae_is_refused(pipe) -> None:
    with pytest.raises(UserError, match="2k\\+1"):
        encode_video(pipe.vae, _frames(10))
    with pytest.raises(UserError, match="uint8"):
        encode_video(pipe.vae, _frames(9).astype(np.float32))


def test_audio_latents_live_where_the_pipeline_denoises(pipe) -> None:
    seconds = 17 / 24.0  # a 17-frame clip at 24 fps
    t = np.arange(int(44100 * seconds)) / 44100
    wave = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    latents = encode_audio(pipe.audio_vae, wave, 44100)
    # 25 latents per second, as many as the pipeline makes for this clip
    assert latents.shape == (2, round(seconds * 25), 4)
    mel = waveform_to_mel(pipe.audio_vae, wave, 44100)
    raw = pipe.audio_vae.encode(mel).latent_dist.mode()
    packed = pipe.prepare_audio_latents(latents=raw, dtype=torch.float32, device="cpu")
    torch.testing.assert_close(packed, pipe._pack_audio_latents(latents[None]))


def test_mono_and_surround_become_stereo(pipe) -> None:
    tone = np.sin(np.arange(16000) / 5.0).astype(np.float32)
    mono = waveform_to_mel(pipe.audio_vae, tone[None], 16000)
    stereo = waveform_to_mel(pipe.audio_vae, np.stack([tone, tone]), 16000)
    surround = waveform_to_mel(pipe.audio_vae, np.stack([tone, tone, 0 * tone]), 16000)
    assert mono.shape == (1, 2, 101, 16)
    assert torch.equal(mono, stereo) and torch.equal(stereo, surround)


def test_mel_filterbank_matches_librosa() -> None:
    fb = mel_filterbank(513, 16000, 16)
    for (f, m), value in LIBROSA_MEL_16.items():
        assert fb[f, m].item() == pytest.approx(value, rel=1e-5)
    assert fb.shape == (513, 16) and (fb >= 0).all()


def test_log_mel_peaks_at_the_tone() -> None:
    t = torch.arange(16000) / 16000
    mel = log_mel(torch.sin(2 * math.pi * 1000 * t)[None], 16000, 160, 64)
    assert mel.shape == (1, 101, 64)
    peak = int(mel[0, 50].argmax())
    fb = mel_filterbank(513, 16000, 64)
    assert peak == int(fb[64].argmax())  # 1 kHz is FFT bin 64 at n_fft 1024
    assert mel.min().item() >= math.log(1e-5) - 1e-6


@pytest.mark.parametrize("orig", [48000, 44100, 22050, 8000])
def test_resample_keeps_the_tone(orig: int) -> None:
    n = orig // 2
    x = torch.sin(2 * math.pi * 440 * torch.arange(n, dtype=torch.float64) / orig)[None].float()
    y = resample(x, orig, 16000)
    assert y.shape == (1, math.ceil(n * 16000 / orig))
    ref = torch.sin(2 * math.pi * 440 * torch.arange(y.shape[1], dtype=torch.float64) / 16000)
    assert (y[0, 200:-200] - ref[200:-200]).abs().max().item() < 1e-3
