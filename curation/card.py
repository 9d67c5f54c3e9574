"""The dataset card (`dataset.yaml`): who a dataset belongs to and how its adapter is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stagekit.errors import UserError

SLUG = r"^[a-z0-9][a-z0-9-]*$"

# What to write for each field, quoted in the error so the fix is one edit away.
_HINTS = {
    "client": "a lowercase slug, e.g. `client: acme` (a-z, 0-9, '-')",
    "adapter": "a lowercase slug, e.g. `adapter: mascot` (a-z, 0-9, '-')",
    "trigger": "one word with no spaces, e.g. `trigger: zorblat`",
    "class_noun": "what the subject is, e.g. `class_noun: mascot`",
    "owner": "who owns the clips, e.g. `owner: Acme Brand Team`",
    "rights": "a note on the rights to train on these clips, e.g. `rights: licensed for training`",
    "licence": "the licence the clips are under, e.g. `licence: Acme content licence 2026-03`",
    "consent": "`consent: obtained` (every person shown agreed), `no-people` or `not-obtained`",
    "settings": "a mapping of dataset-specific settings, e.g. `settings: {}`",
}


class DatasetCard(BaseModel):
    """One dataset's identity. The registry names its adapter `<client>.<adapter>`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    client: str = Field(pattern=SLUG)
    adapter: str = Field(pattern=SLUG)
    trigger: str = Field(min_length=1, pattern=r"^\S+$")
    class_noun: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    rights: str = Field(min_length=1)
    # Optional rights details the registry records per version (docs/registry.md). Left out of
    # model_dump (stages hash the card): recording rights must not re-run curation or training.
    licence: str | None = Field(default=None, min_length=1, exclude=True)
    consent: Literal["obtained", "no-people", "not-obtained"] | None = Field(
        default=None, exclude=True
    )
    settings: dict[str, Any] = Field(default_factory=dict)

    @property
    def registry_name(self) -> str:
        return f"{self.client}.{self.adapter}"

    def registry_record(self) -> dict[str, Any]:
        """What the registry records of the card: every field, the rights details included."""
        rights = {"licence": self.licence, "consent": self.consent}
        return self.model_dump() | {k: v for k, v in rights.items() if v is not None}


def load_card(path: Path) -> DatasetCard:
    """Read and validate `dataset.yaml`; a problem is a one-line UserError saying what to write."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"{path} is missing: write a dataset card there with the fields "
            f"{', '.join(_HINTS)} (see docs/datasets.md)"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML ({_first_line(str(e))}): fix its syntax") from e
    if not isinstance(data, dict):
        raise UserError(f"{path} must be a mapping of fields ({', '.join(_HINTS)})")
    try:
        return DatasetCard.model_validate(data)
    except ValidationError as e:
        raise UserError(_card_error(path, e)) from e


def _card_error(path: Path, e: ValidationError) -> str:
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "?"
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown field '{field}': remove it or move it under `settings:`"
    if err["type"] == "missing":
        return f"{path}: field '{field}' is missing: write {_HINTS.get(field, 'a value')}"
    hint = _HINTS.get(str(err["loc"][0]), "a valid value")
    return f"{path}: field '{field}' is invalid (got {err['input']!r}): write {hint}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "parse error"
