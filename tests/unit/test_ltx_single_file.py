"""The official single-file layout: the tiny model saved in it loads back through diffusers'
single-file loaders with a local config, weight for weight."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx.config import ModelConfig
from ltx.loading import ensure_model, load_components
from ltx.single_file import SINGLE_FILE_COMPONENTS, load_single_file, to_official
from stagekit.errors import UserError

NAMES = list(SINGLE_FILE_COMPONENTS)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_model(ModelConfig(name="tiny", source="tiny"), tmp_path_factory.mktemp("m"))


@pytest.fixture(scope="module")
def checkpoint(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny transformer, VAE and audio VAE in one file, in the official key layout."""
    sd = to_official(load_components(model, NAMES))
    path = tmp_path_factory.mktemp("ckpt") / "ltx-2-tiny.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    return path


def test_official_layout_has_the_official_names(checkpoint: Path) -> None:
    from safetensors import safe_open

    with safe_open(checkpoint, "pt") as f:
        keys = set(f.keys())
    assert "model.diffusion_model.patchify_proj.weight" in keys
    assert "model.diffusion_model.adaln_single.emb.timestep_embedder.linear_1.weight" in keys
    assert "vae.per_channel_statistics.mean-of-means" in keys
    assert any(k.startswith("vae.encoder.down_blocks.8.res_blocks.") for k in keys)
    assert not any(".resnets." in k or "latents_mean" in k for k in keys)


@pytest.mark.parametrize("name", NAMES)
def test_single_file_loads_back_identical_weights(model: Path, checkpoint: Path, name: str) -> None:
    loaded = load_single_file(checkpoint, model, name).state_dict()
    original = load_components(model, [name])[name].state_dict()
    assert loaded.keys() == original.keys()
    assert all(torch.equal(loaded[k], original[k]) for k in original)


def test_missing_files_are_named(model: Path, checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing .*nope\.safetensors"):
        load_single_file(tmp_path / "nope.safetensors", model, "vae")
    with pytest.raises(UserError, match=r"missing .*vae/config\.json"):
        load_single_file(checkpoint, tmp_path, "vae")
    with pytest.raises(UserError, match="not in the single-file checkpoint"):
        load_single_file(checkpoint, model, "text_encoder")
