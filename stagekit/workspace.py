"""Where each stage reads and writes inside a workspace (a folder holding `datasets/`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stagekit.errors import UserError


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace. Data under `datasets/`, derived files under `outputs/<dataset>/`."""

    root: Path

    @classmethod
    def from_env(cls) -> Workspace:
        """`$LTX_LORA_WORKSPACE`, or the current directory."""
        return cls(Path(os.environ.get("LTX_LORA_WORKSPACE", ".")).resolve())

    # data (DVC-tracked)
    def dataset(self, name: str) -> Path:
        return self.root / "datasets" / name

    def raw(self, name: str) -> Path:
        return self.dataset(name) / "raw"

    def reference(self, name: str) -> Path:
        return self.dataset(name) / "reference"

    def card(self, name: str) -> Path:
        return self.dataset(name) / "dataset.yaml"

    def curated(self, name: str) -> Path:
        return self.dataset(name) / "curated"

    def captioned(self, name: str) -> Path:
        return self.dataset(name) / "captioned"

    # derived
    def outputs(self, name: str) -> Path:
        return self.root / "outputs" / name

    def cache(self, name: str) -> Path:
        return self.outputs(name) / "cache"

    def train(self, name: str) -> Path:
        return self.outputs(name) / "train"

    def evaluation(self, name: str) -> Path:
        return self.outputs(name) / "eval"

    def registration(self, name: str) -> Path:
        return self.outputs(name) / "register"

    @property
    def models(self) -> Path:
        return self.root / ".models"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / ".mlflow"

    def require_dataset(self, name: str) -> Path:
        """The dataset folder, or a UserError saying how to create one."""
        path = self.dataset(name)
        if not path.is_dir():
            raise UserError(
                f"dataset '{name}' not found at {path}: put clips in {path / 'raw'}/ and write "
                f"{path / 'dataset.yaml'} (see docs/datasets.md), or run with dataset=sample"
            )
        return path
