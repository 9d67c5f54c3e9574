"""model_hash / component_hash: stable, content-sensitive, and cached."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ltx import identity
from ltx.identity import CACHE_NAME, component_hash, model_hash
from ltx.tiny_build import save_tiny_model


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "m"
    save_tiny_model(path, seed=0)
    return path


@pytest.fixture
def model(base_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "m"
    shutil.copytree(base_dir, dest)
    return dest


def test_stable_across_calls_and_copies(model: Path, base_dir: Path) -> None:
    first = model_hash(model)
    assert len(first) == 64 and model_hash(model) == first
    assert model_hash(base_dir) == first  # content, not location or mtime


def test_cache_file_is_written_and_not_hashed(model: Path) -> None:
    before = model_hash(model)
    assert (model / CACHE_NAME).is_file()
    (model / CACHE_NAME).unlink()
    assert model_hash(model) == before


def test_changes_when_a_weight_file_changes(model: Path) -> None:
    before = model_hash(model)
    vae_before = component_hash(model, "vae")
    text_before = component_hash(model, "text_encoder")
    weights = model / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert model_hash(model) != before
    assert component_hash(model, "vae") != vae_before
    assert component_hash(model, "text_encoder") == text_before


def test_changes_when_a_config_changes(model: Path) -> None:
    before = model_hash(model)
    cfg = model / "transformer" / "config.json"
    cfg.write_text(cfg.read_text().replace('"num_layers": 2', '"num_layers": 3'))
    assert model_hash(model) != before


def test_second_call_uses_the_cache(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_hash(model)
    calls: list[Path] = []
    monkeypatch.setattr(identity, "sha256_file", lambda p: calls.append(p) or "x")
    model_hash(model)
    assert calls == []
    (model / "vae" / "config.json").write_text("{}")
    model_hash(model)
    assert calls == [model / "vae" / "config.json"]  # only the changed file is re-read


def test_components_differ_and_unknown_component_fails(model: Path) -> None:
    assert component_hash(model, "vae") != component_hash(model, "audio_vae")
    with pytest.raises(FileNotFoundError, match="unet"):
        component_hash(model, "unet")


def test_read_only_folder_still_hashes(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = model_hash(model)
    (model / CACHE_NAME).unlink()

    def refuse(*_: object) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr(identity, "write_json", refuse)
    assert model_hash(model) == expected
