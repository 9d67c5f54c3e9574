"""The reference-similarity score separates the subject's footage from unrelated footage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.sample import generate_sample_dataset
from evaluation.metrics import (
    colour_histogram,
    histogram_intersection,
    pooled_histogram,
    reference_similarity,
)
from evaluation.report import render_report, still_png
from ltx.sampling import read_clip


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("s") / "sample"
    generate_sample_dataset(dest)
    return dest


def test_histogram_is_normalised_and_intersection_bounded() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    h = colour_histogram(a)
    assert h.shape == (512,) and h.sum() == pytest.approx(1.0)
    assert histogram_intersection(h, h) == pytest.approx(1.0)
    black = np.zeros((1, 4, 4, 3), np.uint8)
    white = np.full((1, 4, 4, 3), 255, np.uint8)
    assert histogram_intersection(colour_histogram(black), colour_histogram(white)) == 0.0


def test_subject_footage_scores_above_unrelated_footage(sample: Path) -> None:
    refs = pooled_histogram([read_clip(p).video for p in sorted(sample.glob("reference/*.mp4"))])
    subject = [
        reference_similarity(read_clip(p).video, refs) for p in sorted(sample.glob("raw/*.mp4"))
    ]
    rng = np.random.default_rng(1)
    unrelated = []
    for _ in range(len(subject)):
        frames = np.empty((9, 64, 64, 3), np.uint8)
        frames[:] = rng.integers(0, 256, 3, dtype=np.uint8)  # a flat colour field
        frames += rng.integers(0, 12, frames.shape, dtype=np.uint8)  # with grain
        unrelated.append(reference_similarity(frames, refs))
    assert min(subject) > max(unrelated)
    # colour shifts lower the score: the metric reads the palette
    shifted = [
        reference_similarity(np.roll(read_clip(p).video, 1, axis=-1), refs)
        for p in sorted(sample.glob("raw/*.mp4"))
    ]
    assert np.mean(shifted) < np.mean(subject)


def test_report_is_self_contained() -> None:
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    side = {"path": "samples/000-base.mp4", "score": 0.5, "still": still_png(frames)}
    metrics = {
        "verdict": "pass",
        "rule": "r",
        "scores": {"s": 0.5},
        "adapter_name": "a.b",
        "base_model": "tiny",
        "n_references": 1,
        "backend": "rgb",
    }
    page = render_report(metrics, [{"prompt": "<p>", "seed": 0, "base": side, "adapter": side}])
    assert "data:image/png;base64," in page and "&lt;p&gt;" in page
    assert 'class="pass"' in page
