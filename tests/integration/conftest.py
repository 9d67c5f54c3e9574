"""A sample workspace built once per session: tiny model, curated + captioned sample, cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.caption import caption
from curation.card import load_card
from curation.config import CurationConfig
from curation.curate import curate
from curation.sample import generate_sample_dataset
from ltx.buckets import bucket_rules
from ltx.config import ModelConfig
from ltx.loading import ensure_model
from ltx_lora.config import PACKAGED_CONFIGS
from stagekit.workspace import Workspace
from trainer.cache import build_cache
from trainer.config import PreprocessConfig

TINY = ModelConfig(name="ltx2-tiny", source="tiny", seed=0)


def curation_config() -> CurationConfig:
    import yaml

    return CurationConfig.model_validate(
        yaml.safe_load((PACKAGED_CONFIGS / "curation" / "default.yaml").read_text())
    )


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    """Sample dataset curated and captioned with the real stage functions."""
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    generate_sample_dataset(ws.dataset("sample"))
    card = load_card(ws.card("sample"))
    cfg = curation_config()
    curate(
        ws.raw("sample"),
        ws.curated("sample"),
        card,
        cfg,
        bucket_rules(ensure_model(TINY, ws.models)),
    )
    caption(ws.curated("sample"), ws.raw("sample"), ws.captioned("sample"), card, cfg.caption)
    return ws


@pytest.fixture(scope="session")
def model_path(workspace: Workspace) -> Path:
    return ensure_model(TINY, workspace.models)


@pytest.fixture(scope="session")
def cache_dir(workspace: Workspace, model_path: Path) -> Path:
    build_cache(
        workspace.captioned("sample") / "manifest.jsonl",
        workspace.curated("sample"),
        workspace.cache("sample"),
        model_path,
        TINY,
        PreprocessConfig(),
    )
    return workspace.cache("sample")
