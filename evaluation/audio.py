"""Audio scores for modes with audio (audio_video, text_to_audio): how close the rendered sound
is to the reference clips' sound, base against adapter.

- Mel-cepstral distortion (MCD, Kubichek 1993): MFCCs (Davis & Mermelstein 1980: power
  spectrum of 25 ms Hann frames every 10 ms at 16 kHz, 40 mel bands, natural log floored 80 dB
  below the clip's peak, orthonormal
  DCT-II, coefficients 1..13, c0 the loudness left out) of a render and of a reference, frames
  aligned by dynamic time warping (the clips are not parallel recordings), then
  `10 / ln 10 * sqrt(2 * sum_d (c_d - c'_d)^2)` dB averaged along the path. A render's MCD is its
  mean over the reference clips with audio; per prompt and seed, `base - adapter` is the audio
  lift (positive: the adapter sounds more like the references), summarised like the video lift.
- Latent Fréchet distance (FAD's construction on the model's own audio VAE): every latent frame
  of every render [L, C*M'] (ltx.encode.encode_audio, the pipeline's normalised space) against
  every latent frame of the references, Gaussians fitted to each set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MFCC_RATE = 16_000
N_FFT, WIN, HOP = 512, 400, 160  # 32 ms FFT, 25 ms window, 10 ms hop at 16 kHz
N_MELS, N_MFCC = 40, 13
MCD_SCALE = 10.0 / math.log(10.0)  # dB per natural-log cepstral unit
LOG_FLOOR = 1e-10
TOP_DB = 80.0


def mono(audio: np.ndarray, rate: int, target: int = MFCC_RATE) -> np.ndarray:
    """float [C, N] (or [N]) at `rate` → mono float64 [N'] at `target` (polyphase resampling)."""
    from scipy.signal import resample_poly

    wave = np.asarray(audio, dtype=np.float64)
    wave = wave.mean(axis=0) if wave.ndim == 2 else wave
    if rate == target:
        return wave
    g = math.gcd(int(rate), int(target))
    return resample_poly(wave, target // g, int(rate) // g)


def mfcc(wave: np.ndarray, rate: int = MFCC_RATE) -> np.ndarray:
    """Mono float [N] at `rate` → MFCCs c1..c13 [T, 13] (c0, the frame's loudness, left out)."""
    from scipy.fft import dct

    from ltx.encode import mel_filterbank

    frames = _frames(wave)
    power = np.abs(np.fft.rfft(frames * np.hanning(WIN), n=N_FFT)) ** 2  # [T, N_FFT/2+1]
    bank = mel_filterbank(N_FFT // 2 + 1, rate, N_MELS).numpy()  # [freqs, mels]
    mel = np.maximum(power @ bank, LOG_FLOOR)
    # 80 dB of dynamic range below the clip's loudest band (librosa's power_to_db top_db): an
    # empty band's log would otherwise follow the noise floor and swamp the distortion
    log_mel = np.maximum(np.log(mel), np.log(mel.max()) - TOP_DB / MCD_SCALE)
    return dct(log_mel, type=2, norm="ortho", axis=1)[:, 1 : N_MFCC + 1]


def _frames(wave: np.ndarray) -> np.ndarray:
    """[N] → overlapping frames [T, WIN] (zero-padded to at least one frame)."""
    if len(wave) < WIN:
        wave = np.pad(wave, (0, WIN - len(wave)))
    count = 1 + (len(wave) - WIN) // HOP
    index = np.arange(WIN)[None, :] + HOP * np.arange(count)[:, None]
    return wave[index]


def mcd(a: np.ndarray, b: np.ndarray) -> float:
    """Mel-cepstral distortion (dB) between MFCC sequences a [T, D] and b [U, D], frames aligned
    by dynamic time warping: the mean frame distortion along the cheapest path."""
    cost = MCD_SCALE * np.sqrt(2.0 * ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))
    total, steps = _dtw(cost)
    return float(total / steps)


def _dtw(cost: np.ndarray) -> tuple[float, int]:
    """Cheapest monotone path through `cost` [T, U] from (0, 0) to (T-1, U-1) with steps
    right, down, diagonal: (its summed cost, its length). Plain lists: numpy's per-element
    indexing is ~50x slower for this recurrence."""
    rows = cost.tolist()
    inf = float("inf")
    prev, prev_len = [0.0] + [inf] * len(rows[0]), [0] * (len(rows[0]) + 1)
    for row in rows:
        acc, acc_len = [inf], [0]
        for j, c in enumerate(row, start=1):
            # ties go to the diagonal: identical sequences stay on it (MCD exactly 0)
            best, n = prev[j - 1], prev_len[j - 1]
            if prev[j] < best:
                best, n = prev[j], prev_len[j]
            if acc[j - 1] < best:
                best, n = acc[j - 1], acc_len[j - 1]
            acc.append(c + best)
            acc_len.append(n + 1)
        prev, prev_len = acc, acc_len
    return prev[-1], prev_len[-1]


def mean_mcd(render: np.ndarray, references: list[np.ndarray]) -> float:
    """A render's MFCCs against each reference's, averaged."""
    return float(np.mean([mcd(render, ref) for ref in references]))


def audio_latents(audio_vae: Any, audio: np.ndarray, rate: int) -> np.ndarray:
    """A clip's audio in the model's audio-VAE space: latent frames [L, C*M'] (normalised as the
    pipeline's denoiser sees them), one row per 1/25 s for LTX-2."""
    from ltx.encode import encode_audio

    z = encode_audio(audio_vae, audio, rate)  # [C, L, M']
    return z.permute(1, 0, 2).reshape(z.shape[1], -1).float().cpu().numpy()


def latent_frechet(generated: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Fréchet distance between Gaussians fitted to all latent frames of each set."""
    from evaluation.metrics import frechet_distance

    return frechet_distance(np.concatenate(generated), np.concatenate(reference))


class AudioFeatures:
    """MFCCs and audio latents of clips, read from their mp4s; latents cached on disk by clip
    content and model (the audio VAE loads only when one is missing)."""

    def __init__(self, cache_dir: Path, model_hash: str, load_vae: Callable[[], Any]) -> None:
        self.cache_dir, self.model_hash, self.load_vae = cache_dir, model_hash, load_vae
        self._audio: dict[Path, tuple[np.ndarray, int] | None] = {}

    def audio(self, clip: Path) -> tuple[np.ndarray, int] | None:
        """(float [C, N], rate), or None for a clip without sound."""
        if clip not in self._audio:
            from ltx.sampling import read_audio

            wave, rate = read_audio(clip)
            has_sound = wave is not None and wave.size > 0
            self._audio[clip] = (wave, int(rate)) if has_sound else None
        return self._audio[clip]

    def mfcc(self, clip: Path) -> np.ndarray | None:
        sound = self.audio(clip)
        return None if sound is None else mfcc(mono(*sound))

    def latents(self, clip: Path, content_key: str | None = None) -> np.ndarray | None:
        from stagekit.files import atomic_path
        from stagekit.hashing import sha256_file, sha256_json

        sound = self.audio(clip)
        if sound is None:
            return None
        key = sha256_json([content_key or sha256_file(clip), self.model_hash, "audio-latents"])
        path = self.cache_dir / "features" / f"{key[:32]}.audio.npy"
        if path.is_file():
            return np.load(path)
        value = audio_latents(self.load_vae(), *sound)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, value)
        return value


def add_audio_scores(
    out: Any, samples: list[Any], references: list[Path], feats: AudioFeatures, cfg: Any
) -> None:
    """MCD per render against the references (paired lift with its interval) and the latent
    Fréchet distance per side; each unavailable with its reason when there is no sound."""
    from evaluation.score import add_summary, summarise

    refs = [m for m in (feats.mfcc(p) for p in references) if m is not None]
    if not refs:
        out.unavailable["audio"] = "no reference clip has an audio track"
        return
    subject = [s for s in samples if s.group != "prior_preservation"]
    label = f"mfcc-mcd-dtw@{MFCC_RATE // 1000}k-{N_MELS}mel-c1..{N_MFCC}"
    diffs = {}
    for s in subject:
        for side in ("base", "adapter"):
            render = feats.mfcc(s.renders[side][1])
            if render is None:
                out.unavailable["audio"] = f"the {side} render of {s.prompt!r} has no audio"
                return
            s.scores[side]["audio_mcd"] = mean_mcd(render, refs)
        diffs[(s.prompt, s.seed)] = s.scores["base"]["audio_mcd"] - s.scores["adapter"]["audio_mcd"]
    for side in ("base", "adapter"):
        out.scores[f"audio_mcd_{side}"] = float(
            np.mean([s.scores[side]["audio_mcd"] for s in subject])
        )
        out.labels[f"audio_mcd_{side}"] = label
    bound = cfg.gate.min_audio_mcd_lift_ci_low or 0.0
    add_summary(out, "audio_mcd_lift", summarise(diffs, cfg, bound), label)
    _latent_fd(out, subject, references, feats)


def _latent_fd(out: Any, subject: list[Any], references: list[Path], feats: AudioFeatures) -> None:
    ref = [z for z in (feats.latents(p) for p in references) if z is not None]
    label = f"audio-vae-latents@{feats.model_hash[:12]}"
    for side in ("base", "adapter"):
        gen = [feats.latents(s.renders[side][1], s.renders[side][0]) for s in subject]
        gen = [z for z in gen if z is not None]
        if sum(len(z) for z in gen) < 2 or sum(len(z) for z in ref) < 2:
            out.unavailable["audio_latent_fd"] = "needs at least two audio latent frames a side"
            return
        out.scores[f"audio_latent_fd_{side}"] = latent_frechet(gen, ref)
        out.labels[f"audio_latent_fd_{side}"] = label
