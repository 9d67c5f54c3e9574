"""Production backends (CLIP, DINOv2, VideoMAE) load from local folders: tested with tiny random
models of the same transformers classes; a missing one is unavailable, never swapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluation.backends import (
    IMAGE_BACKENDS,
    TEXT_IMAGE_BACKENDS,
    VIDEO_BACKENDS,
    BackendUnavailable,
    label,
    open_backend,
)
from evaluation.config import FeaturesConfig
from evaluation.features import FeatureStore

FRAMES = np.random.default_rng(0).integers(0, 256, (4, 40, 48, 3), dtype=np.uint8)


def _tokenizer(dest: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "a", "red", "mascot", "zorblat", "on", "green"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]"
    ).save_pretrained(dest)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    import torch
    from transformers import (
        CLIPConfig,
        CLIPModel,
        Dinov2Config,
        Dinov2Model,
        VideoMAEConfig,
        VideoMAEModel,
    )

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("backends")
    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    small["intermediate_size"] = 64
    clip = CLIPConfig(
        text_config={**small, "vocab_size": 8, "max_position_embeddings": 16},
        vision_config={**small, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(clip).save_pretrained(root / "clip")
    _tokenizer(root / "clip")
    Dinov2Model(Dinov2Config(**small, image_size=32, patch_size=8)).save_pretrained(root / "dino")
    VideoMAEModel(
        VideoMAEConfig(**small, image_size=32, patch_size=8, num_frames=4, tubelet_size=2)
    ).save_pretrained(root / "videomae")
    return {"clip": root / "clip", "dinov2": root / "dino", "videomae": root / "videomae"}


def test_clip_embeds_frames_and_texts_in_one_space(tiny_models) -> None:
    clip = open_backend(TEXT_IMAGE_BACKENDS, "clip", {"clip": str(tiny_models["clip"])})
    img = clip.embed_frames(FRAMES)
    txt = clip.embed_texts(["a red mascot", "zorblat on green"])
    assert img.shape == (4, 16) and txt.shape == (2, 16)
    assert np.allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(txt[0], txt[1])
    assert label(clip).startswith("clip@") and len(clip.weight_hash) == 64


def test_dinov2_and_videomae(tiny_models) -> None:
    paths = {k: str(v) for k, v in tiny_models.items()}
    dino = open_backend(IMAGE_BACKENDS, "dinov2", paths)
    feats = dino.embed_frames(FRAMES)
    assert feats.shape == (4, 32)
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    video = open_backend(VIDEO_BACKENDS, "videomae", paths)
    assert video.embed_clip(FRAMES).shape == (32,)
    # the hash is of the weights folder: other weights, another label
    assert dino.weight_hash != video.weight_hash


def test_missing_or_unknown_backends_are_unavailable_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"no weights configured.*paths\.clip"):
        open_backend(TEXT_IMAGE_BACKENDS, "clip", {})
    with pytest.raises(BackendUnavailable, match=r"no config\.json"):
        open_backend(IMAGE_BACKENDS, "dinov2", {"dinov2": str(tmp_path)})
    with pytest.raises(BackendUnavailable, match="unknown backend 'i3d'"):
        open_backend(VIDEO_BACKENDS, "i3d", {})
    with pytest.raises(BackendUnavailable, match="no backend configured"):
        open_backend(VIDEO_BACKENDS, None, {})


def test_feature_store_records_unavailable_backends(tmp_path: Path) -> None:
    store = FeatureStore(FeaturesConfig(text_image="clip", video=None), tmp_path)
    assert store.backend("text_image") is None and store.backend("video") is None
    assert "paths.clip" in store.unavailable["text_image"]
    assert "no backend configured" in store.unavailable["video"]
    assert store.label("image").startswith("efficientnet-lite0@")


def test_colour_histogram_measures_colour_distributions_not_layout() -> None:
    colour = open_backend(IMAGE_BACKENDS, "colour-histogram", {})
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    shuffled = rng.permutation(frame.reshape(-1, 3)).reshape(frame.shape)
    red, blue = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    f = colour.embed_frames(np.stack([frame, shuffled, red, blue]))
    assert f.shape == (4, 216)
    assert np.allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-6)
    assert f[0] @ f[1] == pytest.approx(1.0, abs=1e-6)  # same colours, other places
    assert f[2] @ f[3] == pytest.approx(0.0, abs=1e-6)  # no colour in common
    # soft bins: a shade across a bin edge moves the feature a little, not all at once
    a, b = np.full((2, 1, 8, 8, 3), 125, dtype=np.uint8)
    b[..., 0] = 130  # across the edge between bins 2 and 3 (at 127.5)
    assert (colour.embed_frames(a)[0] @ colour.embed_frames(b)[0]) > 0.99  # nearest bin: 0
    # half red, half blue: the Bhattacharyya coefficient with pure red is sqrt(1/2)
    half = red[0].copy()
    half[16:] = blue[0][16:]
    assert colour.embed_frames(half[None])[0] @ f[2] == pytest.approx(0.5**0.5, abs=1e-6)
    assert label(colour).startswith("colour-histogram@")


def test_feature_store_opens_dinov2_and_clip_from_configured_folders(tiny_models, tmp_path) -> None:
    """The evaluation's own path: FeaturesConfig names the backends and their local folders."""
    paths = {"dinov2": str(tiny_models["dinov2"]), "clip": str(tiny_models["clip"])}
    cfg = FeaturesConfig(image="dinov2", text_image="clip", paths=paths, frames_per_clip=3)
    store = FeatureStore(cfg, tmp_path)
    store._frames[tmp_path / "clip.mp4"] = FRAMES  # decoded frames held, as for a real clip
    feats = store.image(tmp_path / "clip.mp4", content_key="k")
    assert feats.shape == (3, 32)  # 3 picked frames x DINOv2 hidden size
    assert store.text_image(tmp_path / "clip.mp4", content_key="k").shape == (3, 16)
    assert store.texts(["a red mascot"]).shape == (1, 16)
    assert store.label("image").startswith("dinov2@") and store.unavailable == {}
    # cached by content key and backend label: a second read is the same array from disk
    assert np.array_equal(store.image(tmp_path / "clip.mp4", content_key="k"), feats)


def test_preprocessor_config_sets_size_and_normalisation(tiny_models, tmp_path) -> None:
    import shutil

    from transformers import BitImageProcessor

    from evaluation.backends import IMAGENET_MEAN, Dinov2Backend

    plain = Dinov2Backend(str(tiny_models["dinov2"]))
    assert (plain.prep.size, plain.prep.mean) == (32, IMAGENET_MEAN)  # config.image_size
    folder = tmp_path / "dino-224"
    shutil.copytree(tiny_models["dinov2"], folder)
    BitImageProcessor(crop_size={"height": 16, "width": 16}, image_mean=[0.5] * 3).save_pretrained(
        folder
    )
    cropped = Dinov2Backend(str(folder))
    assert cropped.prep.size == 16 and cropped.prep.mean == (0.5, 0.5, 0.5)
    assert cropped.prep(FRAMES).shape == (4, 3, 16, 16)
    assert cropped.embed_frames(FRAMES).shape == (4, 32)  # position embeddings interpolate
