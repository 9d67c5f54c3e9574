"""The metrics are themselves tested: augmented copies of the references score above unrelated
clips, optical flow recovers known pan speeds from encoded videos, the rest behave at the edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.sample import generate_sample_dataset
from evaluation import metrics
from evaluation.backends import EfficientNetBackend, label
from evaluation.features import pick_frames
from evaluation.motion import motion_stats
from ltx.sampling import Clip, read_clip, write_clip


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("s") / "sample"
    generate_sample_dataset(dest)
    return dest


@pytest.fixture(scope="module")
def effnet() -> EfficientNetBackend:
    return EfficientNetBackend()


def _frames(path: Path, k: int = 5) -> np.ndarray:
    video = read_clip(path).video
    return video[pick_frames(len(video), k)]


def _augment(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop 80 %, resize back, shift colour, blur and add noise: the same footage, altered."""
    import cv2

    _, h, w, _ = frames.shape
    y, x = rng.integers(0, h // 5), rng.integers(0, w // 5)
    out = []
    for f in frames:
        crop = cv2.resize(f[y : y + 4 * h // 5, x : x + 4 * w // 5], (w, h))
        crop = cv2.GaussianBlur(crop, (3, 3), 0).astype(np.int16)
        crop += rng.integers(-20, 21, 3, dtype=np.int16) + rng.integers(-8, 9, crop.shape)
        out.append(np.clip(crop, 0, 255).astype(np.uint8))
    return np.stack(out)


def _unrelated(rng: np.random.Generator, kind: int) -> np.ndarray:
    """Footage without the mascot: flat fields, gradients, noise and stripes."""
    frames = np.empty((5, 96, 96, 3), np.uint8)
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, 96)[:, None, None]
    pattern = [
        np.zeros((96, 96, 1)),
        np.broadcast_to(ramp, (96, 96, 1)),
        rng.random((96, 96, 1)),
        (np.arange(96)[None, :, None] // 12 % 2).repeat(96, 0),
    ][kind % 4]
    frames[:] = (c0 + (c1 - c0) * pattern).astype(np.uint8)
    return frames


def test_augmented_references_score_above_unrelated_clips(sample: Path, effnet) -> None:
    refs = sorted(sample.glob("reference/*.mp4"))
    ref = np.concatenate([effnet.embed_frames(_frames(p)) for p in refs])
    rng = np.random.default_rng(0)
    copies = [
        metrics.fidelity(effnet.embed_frames(_augment(_frames(p), rng)), ref)
        for p in refs
        for _ in range(2)
    ]
    # the training footage is the same mascot on other backgrounds: also close
    subject = [
        metrics.fidelity(effnet.embed_frames(_frames(p)), ref)
        for p in sorted(sample.glob("raw/*.mp4"))[:4]
    ]
    unrelated = [metrics.fidelity(effnet.embed_frames(_unrelated(rng, k)), ref) for k in range(8)]
    assert min(copies) > max(unrelated)
    assert np.mean(subject) > np.mean(unrelated)
    # features are normalised and the label names the weights
    feats = effnet.embed_frames(_frames(refs[0]))
    assert feats.shape == (5, 1280)
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert label(effnet).startswith("efficientnet-lite0@") and len(effnet.weight_hash) == 64


def _pan(speed: int, frames: int = 17, size: int = 64) -> np.ndarray:
    """A textured scene panned `speed` px/frame to the right."""
    import cv2

    rng = np.random.default_rng(speed)
    scene = rng.integers(0, 256, (size, size + speed * frames, 3)).astype(np.uint8)
    scene = cv2.GaussianBlur(scene, (5, 5), 1.5)
    return np.stack([scene[:, i * speed : i * speed + size] for i in range(frames)])


@pytest.mark.parametrize("speed", [0, 1, 2, 4])
def test_motion_recovers_known_pan_speeds_from_encoded_videos(speed: int, tmp_path: Path) -> None:
    write_clip(tmp_path / "pan.mp4", Clip(_pan(speed), 24.0))
    stats = motion_stats(read_clip(tmp_path / "pan.mp4").video)
    assert stats["speed"] == pytest.approx(speed, abs=0.15 + 0.05 * speed)
    assert stats["speed_rel"] == pytest.approx(stats["speed"] / 64)
    if speed:
        assert stats["smoothness"] > 0.8  # a steady pan


def test_jerky_motion_is_less_smooth() -> None:
    steady = motion_stats(_pan(2))
    frames = _pan(4)
    jerky = motion_stats(np.stack([frames[i // 2 * 2] for i in range(len(frames))]))
    assert jerky["smoothness"] < steady["smoothness"] - 0.3


def test_temporal_consistency_diversity_copy_and_prior(effnet) -> None:
    still = effnet.embed_frames(np.repeat(_pan(0)[:1], 5, axis=0))
    flicker = effnet.embed_frames(
        np.stack([_unrelated(np.random.default_rng(i), i)[0] for i in range(5)])
    )
    assert metrics.temporal_consistency(still) == pytest.approx(1.0, abs=1e-5)
    assert metrics.temporal_consistency(flicker) < 0.9
    assert metrics.diversity([still, still]) == pytest.approx(0.0, abs=1e-5)
    assert metrics.diversity([still, flicker]) > 0.05
    assert metrics.max_similarity(still, np.concatenate([flicker, still])) == pytest.approx(1.0)
    assert metrics.paired_frame_similarity(still, still) == pytest.approx(1.0)


def test_fvd_and_kid_separate_distributions() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (64, 8)), rng.normal(0, 1, (64, 8))
    shifted = rng.normal(1.5, 1, (64, 8))
    assert metrics.frechet_distance(a, b) < 2.0 < metrics.frechet_distance(a, shifted)
    assert abs(metrics.kernel_inception_distance(a, b)) < metrics.kernel_inception_distance(
        a, shifted
    )


def test_fidelity_normalised_between_the_base_floor_and_the_reference_ceiling() -> None:
    from evaluation.metrics import normalised, reference_ceiling

    e = np.eye(4, dtype=np.float32)
    # three references: two identical clips (cosine 1), one orthogonal (cosine 0)
    refs = [e[[0]], e[[0]], e[[1]]]
    # each against the others: (1 + 0)/2 for clip 0 and 1 → 0.5, 0 for clip 2 → mean 1/3
    assert reference_ceiling(refs) == pytest.approx(1 / 3)
    assert normalised(0.2, floor=0.1, ceiling=0.3) == pytest.approx(0.5)
    assert normalised(0.1, 0.1, 0.3) == 0.0 and normalised(0.3, 0.1, 0.3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="two reference clips"):
        reference_ceiling(refs[:1])
