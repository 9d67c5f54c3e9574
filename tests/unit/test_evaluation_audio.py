"""Audio scores on generated sound with known properties: MCD, its paired lift through real mp4
files (AAC), and the latent Fréchet distance in the tiny model's audio VAE space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.audio import (
    AudioFeatures,
    add_audio_scores,
    audio_latents,
    latent_frechet,
    mcd,
    mfcc,
    mono,
)
from evaluation.config import EvaluationConfig
from evaluation.score import Sample, Scored
from ltx.sampling import Clip, write_clip

RATE = 16_000


def tone(pitch: float, seconds: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A buzzy voice-like tone (7 harmonics, 1/k amplitudes), plus white noise of std `noise`."""
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.3 * sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 8))
    return wave + np.random.default_rng(seed).normal(0.0, noise, wave.shape)


def test_identical_audio_has_zero_distortion() -> None:
    a = mfcc(tone(220, 0.7, 0.01))
    assert a.shape == (68, 13)  # 10 ms hop over 0.7 s, c1..c13
    assert mcd(a, a) == 0.0


def test_a_shifted_pitch_is_further_than_a_little_noise() -> None:
    """Over a -30 dB noise floor (an empty band's log power follows its noise): another take
    with 10 % more noise against the same tone a major third up."""
    take = mfcc(tone(220, 0.7, 0.01, seed=0))
    noisy = mcd(take, mfcc(tone(220, 0.7, 0.011, seed=1)))
    shifted = mcd(take, mfcc(tone(220 * 2 ** (4 / 12), 0.7, 0.01, seed=0)))
    semitone = mcd(take, mfcc(tone(220 * 2 ** (1 / 12), 0.7, 0.01, seed=0)))
    assert 0.0 < noisy < 15.0 < semitone < 40.0 < shifted  # measured: 10.5, 18.0, 63.1 dB


def test_time_warping_aligns_a_slower_take() -> None:
    """The same tone, three times as long, is aligned frame by frame: a low distortion."""
    take = mfcc(tone(220, 0.7, 0.01))
    assert mcd(take, mfcc(tone(220, 2.1, 0.01))) < 10.0  # measured 6.8 (the noise differs)
    assert mcd(take, mfcc(tone(330, 2.1, 0.01))) > 40.0  # measured 87


def test_stereo_at_48k_becomes_mono_at_16k() -> None:
    wave = np.stack([tone(220, 1.0), tone(220, 1.0)])
    up = np.stack([np.interp(np.arange(48_000) / 3, np.arange(16_000), w) for w in wave])
    out = mono(up, 48_000)
    assert out.shape == (16_000,)
    assert np.abs(out[200:-200] - wave[0][200:-200]).max() < 0.05


def write(path: Path, wave: np.ndarray | None) -> Path:
    video = np.full((9, 32, 32, 3), 128, np.uint8)
    audio = None if wave is None else wave[None].astype(np.float32)
    write_clip(path, Clip(video, 24.0, audio, RATE if wave is not None else None))
    return path


def config() -> EvaluationConfig:
    return EvaluationConfig(prompts={"in_distribution": ["x"]}, seeds=[0])


def samples(tmp_path: Path, base_pitch: float, adapter_pitch: float) -> list[Sample]:
    """Six prompts, one seed: base renders at one pitch, adapter renders at another."""
    rows = []
    for i in range(6):
        renders = {
            side: (f"{side}{i}", write(tmp_path / f"{side}{i}.mp4", tone(p, 0.7, 0.01, i)))
            for side, p in (("base", base_pitch), ("adapter", adapter_pitch))
        }
        rows.append(
            Sample(f"prompt {i}", "in_distribution", 0, renders, {"base": {}, "adapter": {}})
        )
    return rows


@pytest.fixture(scope="module")
def audio_vae(model_dir: Path):
    from ltx.loading import load_pipeline

    return load_pipeline(model_dir).audio_vae


def test_an_adapter_that_sounds_like_the_references_shows_an_audio_lift(
    tmp_path: Path, audio_vae
) -> None:
    refs = [write(tmp_path / f"ref{i}.mp4", tone(220, 1.5, 0.01, 10 + i)) for i in range(2)]
    out = Scored({}, {}, {}, {})
    feats = AudioFeatures(tmp_path / "cache", "m" * 64, lambda: audio_vae)
    add_audio_scores(out, samples(tmp_path, 330, 220), refs, feats, config())
    s = out.scores
    print({k: round(v, 3) for k, v in s.items()})
    assert s["audio_mcd_adapter"] < 20 < s["audio_mcd_base"]
    assert s["audio_mcd_lift"] == pytest.approx(s["audio_mcd_base"] - s["audio_mcd_adapter"])
    assert s["audio_mcd_lift_ci_low"] > 0 and out.stats["audio_mcd_lift"]["n_prompts"] == 6
    assert out.labels["audio_mcd_lift"].startswith("mfcc-mcd-dtw@16k")
    # the adapter's latent frames sit nearer the references' in the model's audio space
    assert 0.0 <= s["audio_latent_fd_adapter"] < s["audio_latent_fd_base"]
    assert len(list((tmp_path / "cache" / "features").glob("*.audio.npy"))) == 2 + 12


def test_references_without_sound_make_audio_unavailable(tmp_path: Path) -> None:
    out = Scored({}, {}, {}, {})
    feats = AudioFeatures(tmp_path / "cache", "m" * 64, lambda: None)
    add_audio_scores(out, [], [write(tmp_path / "silent.mp4", None)], feats, config())
    assert out.unavailable["audio"] == "no reference clip has an audio track" and not out.scores


def test_latent_frechet_distance_in_the_audio_vae_space(audio_vae) -> None:
    """Audio latents come out one row per latent frame; the same sound's latents are at
    distance ~0 from themselves and further from another pitch's."""
    vae = audio_vae
    same = [audio_latents(vae, tone(220, 1.0, 0.01, i)[None], RATE) for i in range(3)]
    other = [audio_latents(vae, tone(440, 1.0, 0.01, i)[None], RATE) for i in range(3)]
    assert same[0].ndim == 2 and len(same[0]) >= 20  # ~25 latent frames a second
    assert latent_frechet(same, same) == pytest.approx(0.0, abs=1e-6)
    assert latent_frechet(same[:2], same[2:]) < latent_frechet(same, other)
