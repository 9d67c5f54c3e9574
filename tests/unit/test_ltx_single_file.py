"""The official single-file layout: the tiny model saved in it loads back through our key
mapping with a local config, weight for weight and output for output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx.config import ModelConfig
from ltx.loading import ensure_model, load_components
from ltx.single_file import SINGLE_FILE_COMPONENTS, load_single_file, to_official
from ltx.tiny import AUDIO_MEL_BINS, TEXT_HIDDEN, TEXT_LAYERS, TEXT_MAX_TOKENS
from stagekit.errors import UserError

NAMES = list(SINGLE_FILE_COMPONENTS)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_model(ModelConfig(name="tiny", source="tiny"), tmp_path_factory.mktemp("m"))


@pytest.fixture(scope="module")
def checkpoint(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny transformer, VAEs, text connectors and vocoder in one file, official layout."""
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
    # Connectors: projection beside the transformer, the 1-d transformers inside it.
    assert "text_embedding_projection.aggregate_embed.weight" in keys
    block = "model.diffusion_model.video_embeddings_connector.transformer_1d_blocks.0."
    assert block + "attn1.q_norm.weight" in keys and block + "ff.net.2.bias" in keys
    assert "model.diffusion_model.audio_embeddings_connector.learnable_registers" in keys
    # Vocoder: HiFi-GAN names.
    assert {"vocoder.conv_pre.weight", "vocoder.ups.0.weight", "vocoder.conv_post.bias"} <= keys
    assert "vocoder.resblocks.0.convs1.0.weight" in keys
    assert not any(
        k.startswith(("connectors.", "video_connector", "vocoder.upsamplers")) for k in keys
    )


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


@torch.no_grad()
def test_connectors_and_vocoder_from_the_single_file_give_identical_outputs(
    model: Path, checkpoint: Path
) -> None:
    original = load_components(model, ["connectors", "vocoder"])
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, TEXT_MAX_TOKENS, TEXT_HIDDEN * (TEXT_LAYERS + 1), generator=g)
    mask = torch.ones(2, TEXT_MAX_TOKENS, dtype=torch.long)
    mask[1, : TEXT_MAX_TOKENS // 2] = 0  # a left-padded short prompt
    mel = torch.randn(1, 2, 10, AUDIO_MEL_BINS, generator=g)

    connectors = load_single_file(checkpoint, model, "connectors")
    outputs = connectors(hidden, mask), original["connectors"](hidden, mask)
    assert len(outputs[0]) == len(outputs[1]) == 3  # video, audio embeddings and the mask
    assert all(torch.equal(a, b) for a, b in zip(*outputs, strict=True))
    audio = load_single_file(checkpoint, model, "vocoder")(mel)
    expected = original["vocoder"](mel)
    assert audio.shape[:2] == (1, 2) and audio.shape[2] >= 10 * 240  # 240 samples per mel frame
    assert torch.equal(audio, expected) and audio.abs().max() > 0


def test_a_checkpoint_that_does_not_fit_the_config_names_the_keys(
    model: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    sd = load_file(checkpoint)
    del sd["vocoder.conv_post.bias"]
    sd["vocoder.ups.9.weight"] = torch.zeros(1)
    broken = tmp_path / "broken.safetensors"
    save_file(sd, broken)
    with pytest.raises(UserError, match=r"missing conv_post\.bias; unexpected ups\.9\.weight"):
        load_single_file(broken, model, "vocoder")

    other = tmp_path / "cfg"
    (other / "vocoder").mkdir(parents=True)
    (other / "vocoder" / "config.json").write_text('{"_class_name": "LTX2DurationHead"}')
    with pytest.raises(UserError, match="maps only LTX2Vocoder / LTX2VocoderWithBWE"):
        load_single_file(checkpoint, other, "vocoder")
