"""ensure_model / load_pipeline / load_components: local folders only, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ltx.config import ModelConfig
from ltx.loading import ensure_model, load_components, load_pipeline, tiny_model_dirname
from stagekit.errors import UserError


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def tiny_path(models_dir: Path) -> Path:
    return ensure_model(ModelConfig(name="tiny", source="tiny", seed=0), models_dir)


def test_tiny_is_built_once_into_a_spec_named_folder(models_dir: Path, tiny_path: Path) -> None:
    assert tiny_path == models_dir / tiny_model_dirname(0)
    assert tiny_path.name.startswith("tiny-seed0-") and len(tiny_path.name.split("-")[-1]) == 12
    stamp = (tiny_path / "model_index.json").stat().st_mtime_ns
    again = ensure_model(ModelConfig(name="tiny", source="tiny", seed=0), models_dir)
    assert again == tiny_path
    assert (tiny_path / "model_index.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in models_dir.iterdir() if not p.name.startswith(".")] == [tiny_path.name]


def test_other_seed_gets_its_own_folder(models_dir: Path, tiny_path: Path) -> None:
    other = ensure_model(ModelConfig(name="tiny", source="tiny", seed=7), models_dir)
    assert other != tiny_path and other.name.startswith("tiny-seed7-")


def test_diffusers_source_accepts_a_complete_folder(tiny_path: Path, models_dir: Path) -> None:
    cfg = ModelConfig(name="local", source="diffusers", path=str(tiny_path))
    assert ensure_model(cfg, models_dir) == tiny_path


def test_diffusers_source_needs_a_path(models_dir: Path) -> None:
    with pytest.raises(UserError, match=r"model\.path"):
        ensure_model(ModelConfig(name="x", source="diffusers"), models_dir)


def test_missing_model_index_names_the_folder(tmp_path: Path, models_dir: Path) -> None:
    cfg = ModelConfig(name="x", source="diffusers", path=str(tmp_path))
    with pytest.raises(UserError, match=rf"no model_index.json in {tmp_path}"):
        ensure_model(cfg, models_dir)


def test_missing_weight_file_is_named(tiny_path: Path, tmp_path: Path, models_dir: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_path, broken)
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    cfg = ModelConfig(name="x", source="diffusers", path=str(broken))
    with pytest.raises(UserError, match=r"missing weights for vae.*broken/vae"):
        ensure_model(cfg, models_dir)


def test_missing_config_file_is_named(tiny_path: Path, tmp_path: Path, models_dir: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_path, broken)
    (broken / "scheduler" / "scheduler_config.json").unlink()
    cfg = ModelConfig(name="x", source="diffusers", path=str(broken))
    with pytest.raises(UserError, match=r"missing scheduler/scheduler_config.json"):
        ensure_model(cfg, models_dir)


def test_load_pipeline_in_bfloat16(tiny_path: Path) -> None:
    pipe = load_pipeline(tiny_path, dtype="bfloat16")
    assert pipe.transformer.dtype == torch.bfloat16
    assert type(pipe).__name__ == "LTX2Pipeline"


def test_load_components_loads_only_what_is_asked(tiny_path: Path) -> None:
    parts = load_components(tiny_path, ["text_encoder", "tokenizer", "connectors"])
    assert set(parts) == {"text_encoder", "tokenizer", "connectors"}
    assert type(parts["connectors"]).__name__ == "LTX2TextConnectors"
    assert not parts["text_encoder"].training
    vae = load_components(tiny_path, ["vae"], dtype="bfloat16")["vae"]
    assert vae.dtype == torch.bfloat16


def test_load_components_rejects_unknown_names(tiny_path: Path) -> None:
    with pytest.raises(UserError, match="no component"):
        load_components(tiny_path, ["unet"])


def test_bad_dtype_is_a_user_error(tiny_path: Path) -> None:
    with pytest.raises(UserError, match="float64"):
        load_components(tiny_path, ["vae"], dtype="float64")
