"""Packaged bases: small pretrained models that live in a package of their own and plug into
`model.source=<name>` through the `ltx.bases` entry-point group (pyproject.toml).

`ltx` is the LTX-2 family; it names no packaged base itself. The demo base (`demo/`) is one:
a new one is a package exposing a `PackagedBase` and one entry-point line, with no change here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stagekit.errors import UserError

if TYPE_CHECKING:  # ltx.specs imports the tiny model; config validation must stay light
    from ltx.specs import ModelSpec

GROUP = "ltx.bases"


@dataclass(frozen=True)
class PackagedBase:
    """What the loaders and the plans need of a packaged base."""

    name: str
    spec: ModelSpec
    configs: Mapping[str, dict[str, Any]]  # "transformer" and "connectors" component configs
    dirname: Callable[[], str]  # its folder under .models/: changes whenever its weights do
    save: Callable[[Path], None]  # writes the diffusers folder into an empty directory


@cache
def names() -> frozenset[str]:
    """The installed packaged bases' names, read from package metadata without importing them
    (config validation runs in torch-free stages too)."""
    return frozenset(ep.name for ep in entry_points(group=GROUP))


def packaged_base(name: str) -> PackagedBase:
    """The packaged base called `name`, imported on first use."""
    found = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not found:
        raise UserError(
            f"no packaged base called '{name}' is installed (installed: "
            f"{', '.join(sorted(names())) or 'none'}); reinstall with `make setup`"
        )
    base = found[0].load()
    if not isinstance(base, PackagedBase):
        raise UserError(f"entry point {found[0].value} ({GROUP}) is not a PackagedBase")
    return base
