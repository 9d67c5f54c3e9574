"""Registered model names (`<client>.<adapter>`) and alias names, checked before any MLflow call."""

from __future__ import annotations

import re

from stagekit.errors import UserError

# Same slug as the dataset card's `client` and `adapter`, so a card always yields a valid name.
_SLUG = r"[a-z0-9][a-z0-9-]{0,62}"
MODEL_NAME = re.compile(rf"^({_SLUG})\.({_SLUG})$")
ALIAS_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)  # MLflow reserves these
CHAMPION = "champion"
# A version's lineage tags, and the tag naming what its scores were measured on. Here, not in
# register.py, so reading and pulling never import the registration code (numpy for the scan).
LINEAGE_TAGS = (
    "dataset_hash",
    "git_commit",
    "base_model",
    "base_model_hash",
    "config_hash",
    "ltx_version",
)
EVAL_SUITE_TAG = "eval_suite"
# What a version is registered with to say what it is: its files (`file.<name>`), lineage,
# verdict and scores. On the team server only an admin may change or delete these
# (registry.server_guard); what the registry records later (rights.*, licence.*, distribution,
# tested.*, archived) has other names and stays the model's editors' to write.
RECORD_TAGS = frozenset(
    {*LINEAGE_TAGS, EVAL_SUITE_TAG, "adapter_sha256", "verdict", "adapter_strength", "trigger"}
    | {"run_id"}
)
RECORD_PREFIXES = ("file.", "score.")


def is_record_tag(key: str) -> bool:
    """Whether `key` is one of the tags a version is registered with (`RECORD_TAGS`)."""
    return key in RECORD_TAGS or key.startswith(RECORD_PREFIXES)


# The key score promotion compares: the evaluator's mean similarity of the adapter's renders to
# the held-out reference clips (higher is better). Not the lift over the base model: that also
# moves when the base renders move, while this is what a user of the adapter actually gets.
KEY_SCORE = "fidelity_adapter"
# A score `X` with `X_ci_low` and `X_ci_high` beside it has a confidence interval (the evaluator
# bootstraps one for `fidelity_lift`); show and compare print it next to the value.
CI_SUFFIXES = ("_ci_low", "_ci_high")


def split_model_name(name: str) -> tuple[str, str]:
    """`(client, adapter)` of a `<client>.<adapter>` name, or a UserError that shows the form."""
    match = MODEL_NAME.match(name)
    if not match:
        raise UserError(
            f"model name {name!r} is not <client>.<adapter>: two lowercase slugs (a-z, 0-9, '-') "
            "joined by one dot, e.g. acme.mascot"
        )
    return match.group(1), match.group(2)


def check_alias(alias: str) -> str:
    """The alias itself, or a UserError: lowercase slug, not `latest` or `v<number>`."""
    if not re.match(ALIAS_PATTERN, alias) or RESERVED_ALIAS.match(alias):
        raise UserError(
            f"alias {alias!r} is not usable: write a lowercase slug such as candidate or champion "
            "('latest' and v<number> are reserved by MLflow)"
        )
    return alias
