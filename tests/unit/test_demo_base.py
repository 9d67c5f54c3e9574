"""The demo base (`demo/`): its procedural prior, the measurement, the committed weights, and
how it plugs into `model.source=demo`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from demo import check as demo_check
from demo import data as demo_data
from demo import model as demo
from ltx import tiny
from stagekit.errors import UserError


def test_every_scene_renders_its_caption_and_the_reader_recovers_it() -> None:
    rng = np.random.default_rng(0)
    scenes = demo_data.all_scenes()
    assert len(scenes) == 5 * 3 * 4 * 5 - 3 * 3 * 4  # clashing colour/background pairs left out
    for scene in scenes[::7]:
        video = demo_data.render(scene, rng)
        assert video.shape == (demo_data.FRAMES, 64, 64, 3) and video.dtype == np.uint8
        reading = demo_check.read_clip(video)
        assert (reading.colour, reading.motion) == (scene.colour, scene.motion), scene.prompt
        assert 0.01 < reading.shape_fraction < 0.1


def test_reader_finds_nothing_on_a_blank_clip() -> None:
    blank = np.full((17, 64, 64, 3), 90, np.uint8)
    assert demo_check.read_clip(blank).colour is None


def test_prior_never_uses_the_mascot_colours() -> None:
    from curation.sample import BODY, HAT

    for rgb in (BODY, HAT):
        nearest = min(np.linalg.norm(np.subtract(rgb, c)) for c in demo_data.COLOURS.values())
        # farther than colour_share's tolerance (60) plus the prior's tint jitter (12 a channel)
        assert nearest > 60 + 12 * np.sqrt(3), rgb
    assert not {"orange", "purple", "pink"} & set(demo_data.WORDS)


def test_each_prior_word_is_one_token_and_gemma_tells_words_apart() -> None:
    from ltx.encode import gemma_prompt_embeds

    parts = demo.build_components()
    tok = parts["tokenizer"]
    for word in demo_data.WORDS:
        assert len(tok.tokenize(" " + word)) == 1, word
    prompts = [demo_data.Scene(c, "circle", "left", "a blue sky").prompt for c in demo_data.COLOURS]
    embeds, _ = gemma_prompt_embeds(parts, prompts, demo.TEXT_MAX_TOKENS)
    flat = torch.nn.functional.normalize(embeds.flatten(1), dim=1)
    cos = flat @ flat.T
    off = cos[~torch.eye(len(prompts), dtype=torch.bool)]
    # one word apart, the frozen random encoder's states still differ clearly
    assert off.max() < 0.99, off.max()


def test_committed_weights_match_the_recorded_sha256() -> None:
    assert demo.file_sha256(demo.WEIGHTS_FILE) == demo.recorded_sha256()
    weights = demo.load_weights()
    assert {k.split(".")[0] for k in weights} == set(demo.STORED)
    size = demo.WEIGHTS_FILE.stat().st_size
    assert size < 16 << 20, size  # a few MB, shipped in the package


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "demo.safetensors"
    shutil.copy(demo.WEIGHTS_FILE, bad)
    with open(bad, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    with pytest.raises(UserError, match="sha256"):
        demo.load_weights(bad)
    with pytest.raises(UserError, match="missing"):
        demo.load_weights(tmp_path / "absent.safetensors")


def test_weights_load_strictly_into_the_demo_architecture() -> None:
    parts = demo.build_components()
    demo.load_state_dict(parts, demo.load_weights())
    vae = parts["vae"]
    assert vae.spatial_compression_ratio == 16 and vae.temporal_compression_ratio == 2
    # calibrated latent statistics, not the untrained zeros/ones
    assert not torch.allclose(vae.latents_std, torch.ones_like(vae.latents_std))


def test_demo_model_dirname_names_spec_and_weights() -> None:
    name = demo.demo_model_dirname()
    assert name.startswith("demo-") and len(name) == len("demo-") + 12
    assert demo.demo_model_dirname() == name
    assert demo.demo_spec() != tiny.tiny_spec()


def test_demo_plugs_in_through_the_entry_point(tmp_path: Path) -> None:
    """`model.source=demo` reaches demo.model.BASE through package metadata (`ltx` imports no
    packaged base), and its cache sizes are those of the folder it builds."""
    import json

    from ltx import bases
    from ltx.config import ModelConfig
    from ltx.loading import ensure_model
    from ltx.specs import spec_for_source

    assert "demo" in bases.names()
    assert bases.packaged_base("demo") is demo.BASE
    folder = ensure_model(ModelConfig(name="d", source="demo"), tmp_path)
    assert folder.name == demo.demo_model_dirname()
    vae = json.loads((folder / "vae" / "config.json").read_text())
    spec = spec_for_source("demo")
    assert (spec.latent_channels, spec.spatial) == (vae["latent_channels"], 16)
    assert spec_for_source("official") is not spec


def test_an_unknown_source_names_the_ones_there_are() -> None:
    from pydantic import ValidationError

    from ltx import bases
    from ltx.config import ModelConfig

    with pytest.raises(ValidationError, match="one of: demo, diffusers, official, tiny"):
        ModelConfig(name="x", source="ltx3")
    with pytest.raises(UserError, match="no packaged base called 'ltx3'"):
        bases.packaged_base("ltx3")
