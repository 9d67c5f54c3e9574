"""Scores over feature arrays (numpy only, deterministic). Features are L2-normalised rows, so a
dot product is a cosine similarity."""

from __future__ import annotations

import numpy as np


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Average cosine over every pair of rows of `a` [N, D] and `b` [M, D]."""
    return float((a @ b.T).mean())


def fidelity(generated: np.ndarray, reference: np.ndarray) -> float:
    """Reference fidelity: how alike a render's frames and the reference frames are on average
    (DreamBooth's DINO / CLIP-I score: mean pairwise cosine)."""
    return mean_cosine(generated, reference)


def reference_ceiling(references: list[np.ndarray]) -> float:
    """The fidelity a perfect render would reach: each reference clip's frames [K, D] against
    every other reference's frames, averaged (needs ≥ 2 clips)."""
    if len(references) < 2:
        raise ValueError("a reference ceiling needs at least two reference clips")
    return float(
        np.mean(
            [
                fidelity(f, np.concatenate(references[:i] + references[i + 1 :]))
                for i, f in enumerate(references)
            ]
        )
    )


def normalised(value: float, floor: float, ceiling: float) -> float:
    """DreamBooth-style normalisation: 0 at the base model's floor, 1 at the reference ceiling."""
    return (value - floor) / (ceiling - floor)


def temporal_consistency(frames: np.ndarray) -> float:
    """Mean cosine between consecutive frames' features: 1 for a stable subject, lower when the
    content flickers or morphs."""
    if len(frames) < 2:
        return 1.0
    return float(np.sum(frames[:-1] * frames[1:], axis=1).mean())


def clip_embedding(frames: np.ndarray) -> np.ndarray:
    """One normalised vector per clip: the mean of its frame features."""
    v = frames.mean(axis=0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def diversity(clips: list[np.ndarray]) -> float:
    """1 − mean pairwise cosine between the clip embeddings of one prompt's seeds (0 = identical
    renders whatever the seed; a collapsed adapter scores low)."""
    if len(clips) < 2:
        return 0.0
    e = np.stack([clip_embedding(c) for c in clips])
    sims = e @ e.T
    upper = sims[np.triu_indices(len(clips), k=1)]
    return float(1.0 - upper.mean())


def max_similarity(generated: np.ndarray, training: np.ndarray) -> float:
    """Copy detection: the closest any render frame comes to any training frame."""
    return float((generated @ training.T).max())


def paired_frame_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Prior preservation: cosine of matching frames of two renders of one prompt and seed."""
    n = min(len(a), len(b))
    return float(np.sum(a[:n] * b[:n], axis=1).mean())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FVD's Fréchet distance between Gaussians fitted to clip features a [N, D], b [M, D]."""
    from scipy.linalg import sqrtm

    mu = a.mean(axis=0) - b.mean(axis=0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = sqrtm(ca @ cb)
    root = root.real if np.iscomplexobj(root) else root
    return float(mu @ mu + np.trace(ca + cb - 2.0 * root))


def kernel_inception_distance(a: np.ndarray, b: np.ndarray) -> float:
    """KID: unbiased MMD² with the cubic polynomial kernel (k = (x·y/d + 1)³)."""
    d = a.shape[1]

    def k(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x @ y.T / d + 1.0) ** 3

    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    n, m = len(a), len(b)
    saa = (kaa.sum() - np.trace(kaa)) / (n * (n - 1))
    sbb = (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
    return float(saa + sbb - 2.0 * kab.mean())
