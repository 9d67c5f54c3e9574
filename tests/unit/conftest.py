"""Fixtures shared by the unit tests of the model layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltx.tiny_build import save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a diffusers folder, once per test module."""
    path = tmp_path_factory.mktemp("tiny") / "m"
    save_tiny_model(path, seed=0)
    return path
