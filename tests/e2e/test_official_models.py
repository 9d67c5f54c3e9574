"""`ltx-lora run model=ltx2_3` and `model=ltx2_5` end to end on files in Lightricks' official
layouts (tiny weights, sized by `model.config_dir`), offline: the 2.3 single checkpoint with a
Gemma 3 folder, the 2.5 ComfyUI folder of per-component files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.e2e.test_pipeline import ltx_lora, make_workspace

pytestmark = pytest.mark.slow


def official_model(root: Path, version: str) -> list[str]:
    """Tiny weights in `version`'s official layout; the overrides that point a run at them."""
    from ltx.config import ModelConfig
    from ltx.loading import ensure_model
    from ltx.official_writer import save_official
    from ltx.tiny_build import build_tiny_components

    path = save_official(build_tiny_components(0, version=version), root / "official", version)
    folder = ensure_model(ModelConfig(name="t", source="tiny", ltx_version=version), root)
    configs = root / "configs"
    shutil.copytree(folder, configs, ignore=shutil.ignore_patterns("*.safetensors"))
    args = [f"model.path={path}", f"model.config_dir={configs}", "model.dtype=float32"]
    if version == "2.3":
        gemma = root / "gemma"
        shutil.copytree(folder / "text_encoder", gemma)
        for p in (folder / "tokenizer").iterdir():
            shutil.copy(p, gemma / p.name)
        args.append(f"model.text_encoder_path={gemma}")
    return args


@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_run_on_official_files(version: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    make_workspace(ws)
    group = {"2.3": "ltx2_3", "2.5": "ltx2_5"}[version]
    args = official_model(tmp_path / "model", version)
    log = tmp_path / "net.log"
    done = ltx_lora(ws, "run", f"model={group}", *args, "experiment=quick", log=log)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered" in done.stdout
    assert not log.exists() or log.read_text() == ""  # no connection left the machine
    from safetensors import safe_open

    train = ws / "outputs/sample/train"
    assert json.loads((train / "train.json").read_text())["lineage"]["ltx_version"] == version
    with safe_open(str(train / "adapter/comfyui.safetensors"), "pt") as f:  # the header too
        assert f.metadata()["ltx_version"] == version
