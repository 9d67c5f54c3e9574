"""`experiment=demo` composes: the demo base with the settings measured in docs/demo.md."""

from __future__ import annotations

from pathlib import Path

from ltx_lora.config import load_config


def test_experiment_demo_selects_the_demo_base_and_its_settings(tmp_path: Path) -> None:
    plain = load_config("run", [], tmp_path)
    demo = load_config("run", ["experiment=demo"], tmp_path)
    assert demo.model.source == "demo"
    assert demo.trainer.strategy == "text_to_video"  # the demo's audio path is untrained
    assert demo.trainer.caption_dropout > 0  # an unconditional branch for guidance
    assert demo.evaluation.guidance_scale > 1 and demo.trainer.max_steps > plain.trainer.max_steps
    # only what the file names changes: the curation and the render size stay the defaults
    assert demo.curation == plain.curation
    assert (demo.evaluation.width, demo.evaluation.height) == (64, 64)
