"""`configs/model_settings/<model>.yaml` comes with its base model: the demo's settings by
default, nothing of them with another base, and the command line still wins."""

from __future__ import annotations

from pathlib import Path

from ltx_lora.config import load_config


def test_the_default_is_the_demo_base_with_its_settings(tmp_path: Path) -> None:
    demo = load_config("run", [], tmp_path)
    tiny = load_config("run", ["model=tiny"], tmp_path)
    assert demo.model.source == "demo" and tiny.model.source == "tiny"
    assert demo.trainer.strategy == "text_to_video"  # the demo's audio path is untrained
    assert demo.trainer.caption_dropout > 0  # an unconditional branch for guidance
    assert demo.evaluation.guidance_scale > 1 and demo.trainer.max_steps > tiny.trainer.max_steps
    assert demo.evaluation.features.image == "colour-histogram"
    assert all("zorblat" not in p for p in demo.evaluation.prompts.prior_preservation)
    # only what the file names changes: the curation and the render size stay the defaults
    assert demo.curation == tiny.curation
    assert (demo.evaluation.width, demo.evaluation.height) == (64, 64)


def test_another_base_gets_none_of_the_demo_settings(tmp_path: Path) -> None:
    tiny = load_config("run", ["model=tiny"], tmp_path)
    assert tiny.trainer.strategy == "audio_video" and tiny.trainer.caption_dropout == 0
    assert tiny.evaluation.features.image == "efficientnet-lite0"
    assert tiny.evaluation.guidance_scale == 1.0


def test_the_command_line_and_experiments_still_win(tmp_path: Path) -> None:
    cfg = load_config("run", ["evaluation.steps=4", "trainer.strategy=audio_video"], tmp_path)
    assert cfg.evaluation.steps == 4 and cfg.trainer.strategy == "audio_video"
    assert load_config("run", ["experiment=quick"], tmp_path).trainer.max_steps == 10
