"""Face identity: does the adapter draw the reference person's face?

A local face detector and embedder, through OpenCV's own face API (installed with OpenCV, no other
dependency): `cv2.FaceDetectorYN` runs a YuNet ONNX detector, `cv2.FaceRecognizerSF` aligns each
detected face to 112x112 by its five landmarks and embeds it with an SFace ONNX model (OpenCV
Zoo's `face_detection_yunet_2023mar.onnx` and `face_recognition_sface_2021dec.onnx`; an
ArcFace-style ONNX of the same input and output works too). Nothing is downloaded: the two files
are configured as `evaluation.features.paths.face_detector` and `…face_embedder`.

Per frame the most confident face is embedded; a frame without a face is counted, not dropped
silently: every score says how many frames had none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.backends import BackendUnavailable, Frames
from stagekit.hashing import sha256_file, sha256_json

DETECTOR, EMBEDDER = "face_detector", "face_embedder"


@dataclass
class FaceBackend:
    """YuNet detector + SFace embedder (ONNX files) through OpenCV's face API."""

    detector_path: str | None
    embedder_path: str | None
    min_score: float = 0.9  # YuNet's score threshold (OpenCV's sample uses 0.9)
    name: str = "yunet+sface"
    weight_hash: str = ""
    detector: Any = field(default=None, repr=False)
    embedder: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        import cv2

        det, emb = (
            _onnx_file(DETECTOR, self.detector_path),
            _onnx_file(EMBEDDER, self.embedder_path),
        )
        self.weight_hash = sha256_json([sha256_file(det), sha256_file(emb)])
        try:
            self.detector = cv2.FaceDetectorYN.create(str(det), "", (320, 320), self.min_score)
            self.embedder = cv2.FaceRecognizerSF.create(str(emb), "")
        except cv2.error as e:
            raise BackendUnavailable(f"face models failed to load in OpenCV: {e}") from e

    def embed_frames(self, frames: Frames) -> tuple[np.ndarray, int]:
        """uint8 RGB [F, H, W, 3] → (L2-normalised embeddings [K, D] of the K frames where a face
        was found, F - K: the frames without one)."""
        found = [e for e in (self._embed(f) for f in frames) if e is not None]
        dim = 128 if not found else len(found[0])
        feats = np.stack(found) if found else np.zeros((0, dim), np.float32)
        return feats.astype(np.float32), len(frames) - len(found)

    def _embed(self, frame: np.ndarray) -> np.ndarray | None:
        bgr = np.ascontiguousarray(frame[..., ::-1])
        self.detector.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = self.detector.detect(bgr)
        if faces is None or len(faces) == 0:
            return None
        best = faces[int(np.argmax(faces[:, -1]))]  # rows: box, 5 landmarks, score
        aligned = self.embedder.alignCrop(bgr, best)
        v = self.embedder.feature(aligned).reshape(-1).astype(np.float64)
        return v / max(float(np.linalg.norm(v)), 1e-12)


def _onnx_file(kind: str, path: str | None) -> Path:
    if not path:
        raise BackendUnavailable(
            f"no face {kind.split('_')[1]} configured: set evaluation.features.paths.{kind} to a "
            "local ONNX file (docs/evaluation.md, Face similarity)"
        )
    file = Path(path).expanduser()
    if not file.is_file():
        raise BackendUnavailable(f"evaluation.features.paths.{kind}: {file} does not exist")
    return file


def open_faces(paths: dict[str, str], min_score: float = 0.9) -> FaceBackend | None:
    """The face backend when both files are configured; None when neither is (not asked for).
    One without the other is a configuration error, said as BackendUnavailable."""
    if not paths.get(DETECTOR) and not paths.get(EMBEDDER):
        return None
    return FaceBackend(paths.get(DETECTOR), paths.get(EMBEDDER), min_score)


@dataclass(frozen=True)
class Faces:
    """One clip's face embeddings [K, D] and how many of its scored frames had no face."""

    feats: np.ndarray
    missing: int

    @property
    def frames(self) -> int:
        return len(self.feats) + self.missing


def add_face_scores(
    out: Any, samples: list[Any], references: list[Path], store: Any, cfg: Any
) -> None:
    """Identity similarity of each side's faces to the reference faces (mean cosine, as
    fidelity), the paired lift over renders where both sides show a face, and the adapter's
    similarity normalised between the base floor and the reference ceiling (the references'
    faces against each other). Frames and renders without a face are counted in the scores."""
    from evaluation import metrics
    from evaluation.score import add_summary, summarise

    backend = store.faces_backend()
    if backend is None:
        out.unavailable["face_similarity"] = store.unavailable.get("faces", "")
        return
    label = store.label("faces")
    refs = [store.faces(p) for p in references]
    with_face = [r.feats for r in refs if len(r.feats)]
    _count(out, "reference", refs, label)
    if not with_face:
        out.unavailable["face_similarity"] = "no face found in any reference clip"
        return
    ref = np.concatenate(with_face)
    subject = [s for s in samples if s.group != "prior_preservation"]
    diffs = {}
    for side in ("base", "adapter"):
        faces = [store.faces(s.renders[side][1], s.renders[side][0]) for s in subject]
        _count(out, side, faces, label)
        for s, f in zip(subject, faces, strict=True):
            if len(f.feats):
                s.scores[side]["face_similarity"] = metrics.fidelity(f.feats, ref)
    both = [
        s for s in subject if all("face_similarity" in s.scores[x] for x in ("base", "adapter"))
    ]
    out.scores["face_renders_unpaired"] = float(len(subject) - len(both))
    out.labels["face_renders_unpaired"] = label
    if not both:
        out.unavailable["face_similarity"] = "no prompt and seed where both sides drew a face"
        return
    for side in ("base", "adapter"):
        value = float(np.mean([s.scores[side]["face_similarity"] for s in both]))
        out.scores[f"face_similarity_{side}"], out.labels[f"face_similarity_{side}"] = value, label
    for s in both:
        a, b = s.scores["adapter"]["face_similarity"], s.scores["base"]["face_similarity"]
        diffs[(s.prompt, s.seed)] = a - b
    add_summary(out, "face_similarity_lift", summarise(diffs, cfg), label)
    _normalised(out, with_face, label)


def _count(out: Any, side: str, faces: list[Faces], label: str) -> None:
    """`face_frames_<side>` scored and `face_missing_frames_<side>` without a face."""
    out.scores[f"face_frames_{side}"] = float(sum(f.frames for f in faces))
    out.scores[f"face_missing_frames_{side}"] = float(sum(f.missing for f in faces))
    out.labels[f"face_frames_{side}"] = out.labels[f"face_missing_frames_{side}"] = label


def _normalised(out: Any, with_face: list[np.ndarray], label: str) -> None:
    from evaluation import metrics

    if len(with_face) < 2:
        out.unavailable["face_similarity_normalised"] = "needs faces in two reference clips"
        return
    ceiling = metrics.reference_ceiling(with_face)
    floor = out.scores["face_similarity_base"]
    out.scores["face_similarity_reference_ceiling"] = ceiling
    out.labels["face_similarity_reference_ceiling"] = label
    if ceiling - floor <= 1e-6:
        out.unavailable["face_similarity_normalised"] = (
            f"the base's faces already match the references as well as they match each other "
            f"(base {floor:.4f}, ceiling {ceiling:.4f})"
        )
        return
    value = metrics.normalised(out.scores["face_similarity_adapter"], floor, ceiling)
    out.scores["face_similarity_normalised"], out.labels["face_similarity_normalised"] = (
        value,
        label,
    )
