"""Per-clip features (image, motion, video), cached on disk by clip content and backend label."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation import motion
from evaluation.backends import (
    IMAGE_BACKENDS,
    TEXT_IMAGE_BACKENDS,
    VIDEO_BACKENDS,
    BackendUnavailable,
    label,
    open_backend,
)
from evaluation.config import FeaturesConfig
from evaluation.faces import Faces, open_faces
from stagekit.files import atomic_path, read_json, write_json
from stagekit.hashing import sha256_file, sha256_json


def pick_frames(n: int, k: int) -> np.ndarray:
    """k evenly spaced frame indices of n (first and last included)."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int))


@dataclass
class FeatureStore:
    """Opens each backend once, on first need; a backend that cannot open is remembered as
    unavailable with its reason."""

    cfg: FeaturesConfig
    cache_dir: Path
    _open: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    _frames: dict[Path, np.ndarray] = field(default_factory=dict)

    def backend(self, kind: str) -> Any | None:
        """`kind` in image / text_image / video → backend, or None (reason in `unavailable`)."""
        if kind in self._open or kind in self.unavailable:
            return self._open.get(kind)
        registry = {"image": IMAGE_BACKENDS, "text_image": TEXT_IMAGE_BACKENDS}.get(
            kind, VIDEO_BACKENDS
        )
        try:
            self._open[kind] = open_backend(registry, getattr(self.cfg, kind), self.cfg.paths)
        except BackendUnavailable as e:
            self.unavailable[kind] = str(e)
        return self._open.get(kind)

    def label(self, kind: str) -> str | None:
        b = self.faces_backend() if kind == "faces" else self.backend(kind)
        return label(b) if b is not None else None

    def faces_backend(self) -> Any | None:
        """The face detector + embedder when both are configured (reason in `unavailable`)."""
        if "faces" not in self._open and "faces" not in self.unavailable:
            try:
                self._open["faces"] = open_faces(self.cfg.paths, self.cfg.face_min_score)
            except BackendUnavailable as e:
                self.unavailable["faces"] = str(e)
            if self._open.get("faces") is None and "faces" not in self.unavailable:
                self.unavailable["faces"] = (
                    "no face models configured (evaluation.features.paths.face_detector and "
                    "face_embedder)"
                )
        return self._open.get("faces")

    def faces(self, clip: Path, content_key: str | None = None) -> Faces:
        """Face embeddings of the scored frames, and how many frames had no face (cached)."""
        backend = self.faces_backend()
        key = self._key(clip, content_key, label(backend), self.cfg.frames_per_clip)
        path = self.cache_dir / "features" / f"{key[:32]}.faces.npz"
        if path.is_file():
            with np.load(path) as z:
                return Faces(z["feats"], int(z["missing"]))
        feats, missing = backend.embed_frames(self._picked(clip))
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, feats=feats, missing=np.int64(missing))
        return Faces(feats, missing)

    def frames(self, clip: Path) -> np.ndarray:
        """Decoded RGB frames [F, H, W, 3] (held for the run: clips here are few and small)."""
        if clip not in self._frames:
            from ltx.sampling import read_clip

            self._frames[clip] = read_clip(clip).video
        return self._frames[clip]

    def image(self, clip: Path, content_key: str | None = None) -> np.ndarray | None:
        """L2-normalised features [K, D] of K evenly spaced frames; None when no backend."""
        backend = self.backend("image")
        if backend is None:
            return None
        key = self._key(clip, content_key, label(backend), self.cfg.frames_per_clip)
        return self._cached(key, ".npy", lambda: backend.embed_frames(self._picked(clip)))

    def motion(self, clip: Path, content_key: str | None = None) -> dict[str, float]:
        key = self._key(clip, content_key, motion.backend_label(), 0)
        path = self.cache_dir / "features" / f"{key[:32]}.motion.json"
        if path.is_file():
            return read_json(path)
        stats = motion.motion_stats(self.frames(clip))
        write_json(path, stats)
        return stats

    def video(self, clip: Path, content_key: str | None = None) -> np.ndarray | None:
        backend = self.backend("video")
        if backend is None:
            return None
        key = self._key(clip, content_key, label(backend), 0)
        return self._cached(key, ".video.npy", lambda: backend.embed_clip(self.frames(clip)))

    def texts(self, texts: list[str]) -> np.ndarray | None:
        backend = self.backend("text_image")
        return None if backend is None else backend.embed_texts(texts)

    def text_image(self, clip: Path, content_key: str | None = None) -> np.ndarray | None:
        """Frame features in the text-image backend's space (for prompt adherence)."""
        backend = self.backend("text_image")
        if backend is None:
            return None
        key = self._key(clip, content_key, label(backend), self.cfg.frames_per_clip)
        return self._cached(key, ".ti.npy", lambda: backend.embed_frames(self._picked(clip)))

    def _picked(self, clip: Path) -> np.ndarray:
        frames = self.frames(clip)
        return frames[pick_frames(len(frames), self.cfg.frames_per_clip)]

    def _cached(self, key: str, suffix: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.cache_dir / "features" / f"{key[:32]}{suffix}"
        if path.is_file():
            return np.load(path)
        value = np.asarray(compute())
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, value)
        return value

    @staticmethod
    def _key(clip: Path, content_key: str | None, backend: str, k: int) -> str:
        # renders are keyed by their render key; other clips by their bytes
        return sha256_json([content_key or sha256_file(clip), backend, k])
