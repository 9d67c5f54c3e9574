"""The shipped curation config: every key present, valid, and the bucket rules accept it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from curation.config import CaptionConfig, CurationConfig
from ltx.buckets import BucketRules

DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "curation" / "default.yaml"


def load_default() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


def test_default_has_every_key_and_validates() -> None:
    tree = load_default()
    assert set(tree) == set(CurationConfig.model_fields)
    assert set(tree["caption"]) == set(CaptionConfig.model_fields)
    cfg = CurationConfig.model_validate(tree)
    rules = BucketRules(spatial=32, temporal=8)
    for width, height in cfg.buckets:
        rules.check(width, height, cfg.frames)
    assert cfg.frames == 17 and cfg.audio_sample_rate == 16000


def test_first_line_is_the_command() -> None:
    assert DEFAULT.read_text().splitlines()[0].startswith("# ltx-lora curate")


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        CurationConfig.model_validate({**load_default(), "framez": 9})
    with pytest.raises(ValidationError, match="extra"):
        CaptionConfig.model_validate({"template": "{trigger}", "prefix": "x"})


@pytest.mark.parametrize(
    ("key", "value"),
    [("frames", 0), ("validation_fraction", 1.0), ("crf", 60), ("buckets", []), ("fps", -1)],
)
def test_bad_values_are_rejected(key: str, value: object) -> None:
    with pytest.raises(ValidationError, match=key):
        CurationConfig.model_validate({**load_default(), key: value})


def test_template_placeholders_are_checked() -> None:
    assert CaptionConfig(template="a {class_noun} by {client}, {trigger}").template
    with pytest.raises(ValidationError, match="unknown placeholder"):
        CaptionConfig(template="{trigger} {subject}")
