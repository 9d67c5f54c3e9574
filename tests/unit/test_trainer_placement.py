"""`place_base` streams the weights from their files into a model built on meta, tensor by
tensor: what it places is exactly what loading the whole transformer and then quantising it
placed (state dicts, quantised weights and a forward equal), for each format, the tiny and demo
models, from a diffusers folder and from the official layout. Its host-RAM bound is measured in
tests/integration/test_low_ram_loading.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ltx.config import ModelConfig
from ltx.loading import ensure_model, load_components
from ltx.official_writer import save_official
from ltx.single_file import SINGLE_FILE_COMPONENTS
from stagekit.errors import UserError
from trainer.placement import place_base
from trainer.quantize import quantize_base

CPU = torch.device("cpu")
KINDS = ["none", "int8", "nf4"]
WEIGHTED = [*SINGLE_FILE_COMPONENTS, "text_encoder"]


def _official_view(folder: Path, root: Path, version: str = "2.0") -> Path:
    """The model of diffusers `folder` written in the official layout, and its view folder."""
    components = load_components(folder, WEIGHTED)
    official = save_official(components, root / "official", version)
    gemma = root / "gemma"
    shutil.copytree(folder / "text_encoder", gemma)
    for p in (folder / "tokenizer").iterdir():
        shutil.copy(p, gemma / p.name)
    cfg = ModelConfig(
        name="t",
        source="official",
        ltx_version=version,
        path=str(official),
        text_encoder_path=str(gemma),
        config_dir=str(folder),
    )
    return ensure_model(cfg, root / "models")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    tiny = ensure_model(ModelConfig(name="t", source="tiny"), root)
    demo = ensure_model(ModelConfig(name="ltx2-demo", source="demo"), root)
    return {
        "tiny": tiny,
        "tiny-official": _official_view(tiny, tmp_path_factory.mktemp("tiny-official")),
        "demo": demo,
        "demo-official": _official_view(demo, tmp_path_factory.mktemp("demo-official")),
    }


def _loaded_then_quantised(path: Path, cfg: ModelConfig, host_blocks: int) -> torch.nn.Module:
    """What `place_base` did before it streamed: the whole transformer, then quantised."""
    transformer = load_components(path, ["transformer"], cfg.dtype)["transformer"]
    quantize_base(transformer, cfg.quantize, CPU, host_blocks=host_blocks)
    # from_pretrained leaves tensors in the mapped file, at offsets CPU kernels round
    # differently from (3.6e-7 on the tiny model); the streamed ones are fresh and aligned, as
    # `load_official`'s are: compare the same values in aligned memory
    for p in transformer.parameters():
        if type(p.data) is torch.Tensor:
            p.data = p.data.clone()
    return transformer


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor the module keeps, quantised weights by their stored parts."""
    out = {}
    for key, value in module.state_dict().items():
        if hasattr(value, "__tensor_flatten__"):  # quanto: data and scale
            names, _ = value.__tensor_flatten__()
            out.update({f"{key}.{n}": getattr(value, n) for n in names})
        elif isinstance(value, torch.Tensor):
            out[key] = value
    return out


def _inputs(transformer: torch.nn.Module) -> dict:
    c = transformer.config
    g = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(1, 2 * 4 * 4, c.in_channels, generator=g),
        "audio_hidden_states": torch.randn(1, 5, c.audio_in_channels, generator=g),
        "encoder_hidden_states": torch.randn(1, 16, c.caption_channels, generator=g),
        "audio_encoder_hidden_states": torch.randn(1, 16, c.caption_channels, generator=g),
        "timestep": torch.tensor([500.0]),
        "num_frames": 2,
        "height": 4,
        "width": 4,
        "audio_num_frames": 5,
        "fps": 24.0,
        "return_dict": False,
    }


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("model", ["tiny", "tiny-official", "demo", "demo-official"])
def test_streamed_placement_equals_load_then_quantise(
    folders: dict[str, Path], model: str, kind: str
) -> None:
    path, host_blocks = folders[model], 1
    cfg = ModelConfig(name="m", source="tiny", quantize=kind)
    want = _loaded_then_quantised(path, cfg, host_blocks)
    got = place_base(path, cfg, CPU, host_blocks=host_blocks)
    assert [(n, type(m)) for n, m in got.named_modules()] == [
        (n, type(m)) for n, m in want.named_modules()
    ]
    got_sd, want_sd = _state(got), _state(want)
    assert got_sd.keys() == want_sd.keys()
    for key, value in want_sd.items():
        assert got_sd[key].dtype == value.dtype, key
        assert torch.equal(got_sd[key], value), key
    assert not any(t.is_meta for t in [*got.parameters(), *got.buffers()])
    assert got.training == want.training
    with torch.no_grad():
        assert torch.equal(got(**_inputs(got))[0], want(**_inputs(want))[0])


def test_a_file_of_another_size_is_refused_naming_the_key(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "m"
    shutil.copytree(folders["tiny"], folder)
    file = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    sd = load_file(file)
    sd["proj_in.weight"] = torch.zeros(3, 3)
    save_file(sd, file)
    with pytest.raises(UserError, match=r"proj_in\.weight is \[3, 3\]"):
        place_base(folder, ModelConfig(name="m", source="tiny"), CPU)
    del sd["proj_in.weight"]
    sd["extra.weight"] = torch.zeros(1)
    save_file(sd, file)
    with pytest.raises(UserError, match=r"missing proj_in\.weight; unexpected extra\.weight"):
        place_base(folder, ModelConfig(name="m", source="tiny"), CPU)


@pytest.mark.parametrize("version", ["2.0", "2.3"])
def test_connectors_go_to_the_device_without_their_text_projections(version: str) -> None:
    """Training runs the connectors' 1-D transformers on cached projected text: those move to
    the device ("meta" here stands for it), the projections stay on the host, and the plan's
    connectors term is what moved."""
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    from ltx.tiny import connectors_config
    from tests.unit.test_trainer_plan import shape
    from trainer import plan_sizes as sizes
    from trainer.placement import place_connectors

    connectors = LTX2TextConnectors(**connectors_config(version))
    place_connectors(connectors, torch.device("meta"))
    where = {n: {p.device.type for p in m.parameters()} for n, m in connectors.named_children()}
    projections = [n for n in where if n.endswith("text_proj_in")]
    assert projections == (
        ["text_proj_in"] if version == "2.0" else ["video_text_proj_in", "audio_text_proj_in"]
    )
    assert all(where[n] == {"cpu"} for n in projections)
    assert all(devices == {"meta"} for n, devices in where.items() if n not in projections)
    assert not any(p.requires_grad for p in connectors.parameters())
    moved = sum(p.numel() * p.element_size() for p in connectors.parameters() if p.is_meta)
    facts = sizes.model_facts(shape(version=version))  # the tiny model's step
    assert facts["connectors_bytes"] - facts["projection_bytes"] == moved
