"""Dataset cards: valid ones load, every problem is a one-line UserError naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from curation.card import DatasetCard, load_card
from stagekit.errors import UserError

GOOD = {
    "client": "acme",
    "adapter": "mascot-v2",
    "trigger": "zorblat",
    "class_noun": "mascot",
    "owner": "Acme Brand Team",
    "rights": "licensed for training",
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_loads_a_valid_card(tmp_path: Path) -> None:
    card = load_card(write(tmp_path, {**GOOD, "settings": {"fps": 24}}))
    assert isinstance(card, DatasetCard)
    assert card.registry_name == "acme.mascot-v2"
    assert card.settings == {"fps": 24}
    assert load_card(write(tmp_path, GOOD)).settings == {}


def test_missing_file_says_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"dataset\.yaml is missing.*client"):
        load_card(tmp_path / "dataset.yaml")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"client": "Acme Corp"}, "client"),
        ({"adapter": "-x"}, "adapter"),
        ({"trigger": "two words"}, "trigger"),
        ({"trigger": ""}, "trigger"),
        ({"class_noun": ""}, "class_noun"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_field_is_named(tmp_path: Path, change: dict, field: str) -> None:
    path = write(tmp_path, {**GOOD, **change})
    with pytest.raises(UserError) as err:
        load_card(path)
    message = str(err.value)
    assert str(path) in message and f"'{field}'" in message and "\n" not in message


def test_missing_field_is_named(tmp_path: Path) -> None:
    data = {k: v for k, v in GOOD.items() if k != "owner"}
    with pytest.raises(UserError, match=r"'owner' is missing: write"):
        load_card(write(tmp_path, data))


@pytest.mark.parametrize("text", ["client: [unclosed", "- just\n- a list\n"])
def test_not_a_mapping_or_not_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "dataset.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=r"dataset\.yaml"):
        load_card(path)
