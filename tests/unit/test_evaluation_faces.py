"""Face similarity through OpenCV's face API on tiny ONNX models of the real formats, built here:
a YuNet-format detector (its twelve `cls/obj/bbox/kps_<stride>` outputs) that finds a face
where a patch is strongly red, and a random SFace-format embedder (112x112 BGR → 128)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.config import EvaluationConfig, FeaturesConfig
from evaluation.faces import FaceBackend, add_face_scores
from evaluation.features import FeatureStore
from evaluation.score import Sample, Scored
from ltx.sampling import Clip, write_clip

pytest.importorskip("onnx")  # torch's ONNX exporter writes its files through it

STRIDES = (8, 16, 32)
# five landmarks (eyes, nose, mouth corners) in cell units around the cell's centre
LANDMARKS = (-0.2, -0.2, 0.2, -0.2, 0.0, 0.0, -0.15, 0.25, 0.15, 0.25)


class TinyYuNet(torch.nn.Module):
    """YuNet's output contract: per stride, [1, N, 1] class and objectness scores, [1, N, 4]
    box (cell offset, log size) and [1, N, 10] landmarks. A face: an 8x8 cell whose red
    exceeds its blue by half the range (input is OpenCV's BGR blob, 0..255)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cls, obj, box, kps = [], [], [], []
        for s in STRIDES:
            p = F.avg_pool2d(x, s) / 255.0
            score = torch.sigmoid(40 * (p[:, 2:3] - p[:, 0:1] - 0.5)) * float(s == 8)
            ones = torch.ones_like(score)
            cls.append(_flat(score))
            obj.append(_flat(ones))
            size = math.log(3.0)  # 24 px boxes around the cell
            box.append(_flat(torch.cat([ones * 0.5, ones * 0.5, ones * size, ones * size], 1)))
            kps.append(_flat(torch.cat([ones * (0.5 + 3 * k) for k in LANDMARKS], 1)))
        return (*cls, *obj, *box, *kps)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).transpose(1, 2)  # [1, C, h, w] → [1, h*w, C]


class TinySFace(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 8, stride=8)
        self.fc = torch.nn.Linear(8 * 14 * 14, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x / 128.0 - 1.0)).flatten(1))


@pytest.fixture(scope="module")
def face_models(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("faces")
    names = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES]
    axes = {"input": {2: "h", 3: "w"}} | {n: {1: "n"} for n in names}
    torch.onnx.export(
        TinyYuNet(), torch.zeros(1, 3, 64, 64), root / "yunet.onnx", dynamo=False,
        input_names=["input"], output_names=names, dynamic_axes=axes,
    )  # fmt: skip
    torch.manual_seed(0)
    torch.onnx.export(
        TinySFace().eval(), torch.zeros(1, 3, 112, 112), root / "sface.onnx", dynamo=False,
        input_names=["data"], output_names=["fc1"],
    )  # fmt: skip
    return {"face_detector": str(root / "yunet.onnx"), "face_embedder": str(root / "sface.onnx")}


def frame(identity: int | None, seed: int = 0) -> np.ndarray:
    """A 64x64 grey frame; with an identity, a red 24x24 'face' carrying that identity's
    green pattern at a position that moves with `seed`."""
    img = np.full((64, 64, 3), 90, np.uint8)
    if identity is not None:
        top = 12 + 4 * (seed % 3)
        yy, xx = np.mgrid[0:24, 0:24]
        # identity 0: dark green stripes; identity 1: bright green checks
        pattern = (
            20 + 60 * ((xx // 3) % 2) if identity == 0 else 140 + 100 * ((xx // 6 + yy // 6) % 2)
        )
        img[top : top + 24, 16:40] = np.stack(
            [np.full((24, 24), 250), pattern, np.full((24, 24), 10)], -1
        )
    return img


def test_faces_are_embedded_and_frames_without_one_counted(face_models) -> None:
    backend = FaceBackend(face_models["face_detector"], face_models["face_embedder"])
    frames = np.stack([frame(0, 0), frame(None), frame(0, 1), frame(None), frame(1, 2)])
    feats, missing = backend.embed_frames(frames)
    assert feats.shape == (3, 128) and missing == 2
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    same, other = float(feats[0] @ feats[1]), float(feats[0] @ feats[2])
    assert same > other  # one identity, moved, against another identity


def clip(path: Path, identities: list[int | None], seed: int) -> Path:
    video = np.stack([frame(ident, seed + i) for i, ident in enumerate(identities)])
    write_clip(path, Clip(video, 24.0))
    return path


def test_face_similarity_lift_normalised_and_counted(tmp_path: Path, face_models) -> None:
    """References show identity 0; the adapter draws it, the base draws identity 1 and in one
    render no face at all, which is counted and left out of the pairs."""
    refs = [clip(tmp_path / f"ref{i}.mp4", [0] * 5, i) for i in range(3)]
    samples = []
    for i in range(6):
        base_ids = [None] * 5 if i == 0 else [1] * 5
        renders = {
            "base": (f"b{i}", clip(tmp_path / f"b{i}.mp4", base_ids, i)),
            "adapter": (f"a{i}", clip(tmp_path / f"a{i}.mp4", [0, 0, 0, 0, None], i)),
        }
        samples.append(Sample(f"p{i}", "in_distribution", 0, renders, {"base": {}, "adapter": {}}))
    cfg = EvaluationConfig(
        prompts={"in_distribution": ["x"]},
        seeds=[0],
        features=FeaturesConfig(paths=face_models, frames_per_clip=5),
    )
    out = Scored({}, {}, {}, {})
    add_face_scores(out, samples, refs, FeatureStore(cfg.features, tmp_path / "cache"), cfg)
    s = out.scores
    assert s["face_missing_frames_base"] == 5 and s["face_frames_base"] == 30
    assert s["face_missing_frames_adapter"] == 6 and s["face_missing_frames_reference"] == 0
    assert s["face_renders_unpaired"] == 1 and out.stats["face_similarity_lift"]["n_prompts"] == 5
    assert s["face_similarity_adapter"] > s["face_similarity_base"]
    assert s["face_similarity_lift_ci_low"] > 0
    ceiling, floor = s["face_similarity_reference_ceiling"], s["face_similarity_base"]
    expected = (s["face_similarity_adapter"] - floor) / (ceiling - floor)
    assert s["face_similarity_normalised"] == pytest.approx(expected)
    assert out.labels["face_similarity_lift"].startswith("yunet+sface@")


def test_face_similarity_without_models_is_unavailable(tmp_path: Path, face_models) -> None:
    cfg = EvaluationConfig(prompts={"in_distribution": ["x"]}, seeds=[0])
    out = Scored({}, {}, {}, {})
    add_face_scores(out, [], [], FeatureStore(cfg.features, tmp_path), cfg)
    assert "face_detector" in out.unavailable["face_similarity"] and not out.scores
    half = FeaturesConfig(paths={"face_detector": face_models["face_detector"]})
    store = FeatureStore(half, tmp_path)
    add_face_scores(out, [], [], store, cfg)
    assert "no face embedder configured" in out.unavailable["face_similarity"]
