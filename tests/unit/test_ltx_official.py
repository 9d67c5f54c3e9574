"""Each LTX version from files in its official layout: a tiny model written as Lightricks
publishes it (one checkpoint for 2.0 and 2.3, ComfyUI's per-component folders for 2.5, key
names from the same map the full-size test checks against ltx-core) loads with nothing missing
or left over, and computes exactly what the in-memory model computes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ltx.config import ModelConfig
from ltx.loading import ensure_model, load_components, load_pipeline
from ltx.official_writer import save_official
from ltx.single_file import IGNORED, SINGLE_FILE_COMPONENTS, normalise_key, owner
from ltx.tiny_build import build_tiny_components
from stagekit.errors import UserError

VERSIONS = ["2.0", "2.3", "2.5"]
WEIGHTED = [*SINGLE_FILE_COMPONENTS, "text_encoder"]


@pytest.fixture(scope="module", params=VERSIONS)
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny model of one version: in memory, as a diffusers folder (its configs size the
    official files), in the official layout, and the view folder the loader makes of it."""
    version = request.param
    root = tmp_path_factory.mktemp(f"v{version}")
    components = build_tiny_components(0, version=version)
    folder = ensure_model(ModelConfig(name="t", source="tiny", ltx_version=version), root)
    official = save_official(components, root / "official", version)
    gemma = None
    if version != "2.5":  # a Gemma 3 folder as HF ships it: weights, config and tokenizer
        gemma = root / "gemma"
        shutil.copytree(folder / "text_encoder", gemma)
        for p in (folder / "tokenizer").iterdir():
            shutil.copy(p, gemma / p.name)
    cfg = ModelConfig(
        name="t",
        source="official",
        ltx_version=version,
        path=str(official),
        text_encoder_path=str(gemma) if gemma else None,
        config_dir=str(folder),
    )
    view = ensure_model(cfg, root / "models")
    return {"version": version, "components": components, "cfg": cfg, "view": view, "root": root}


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.rglob("*.safetensors"))


def test_every_key_of_the_official_files_is_claimed(tiny: dict) -> None:
    """Zero unused keys: each key belongs to a component (or is the 2.5 text encoder's)."""
    for path in _files(Path(tiny["cfg"].path)):
        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
        if "text_encoders" in path.parts:
            continue  # Gemma, projections and tokenizer: checked by the loads below
        unclaimed = [k for k in keys if owner(normalise_key(k)) is None]
        assert unclaimed == [] and not any(IGNORED.search(k) for k in keys)


def test_components_load_with_identical_weights(tiny: dict) -> None:
    loaded = load_components(tiny["view"], WEIGHTED)
    for name in WEIGHTED:
        ours, theirs = loaded[name].state_dict(), tiny["components"][name].state_dict()
        assert set(ours) == set(theirs), name
        for key, value in theirs.items():
            assert torch.equal(ours[key], value), f"{name}.{key}"


def test_transformer_forward_is_bit_identical(tiny: dict) -> None:
    from ltx.forward import predict_velocity
    from ltx.tiny import TEXT_MAX_TOKENS

    loaded = load_components(tiny["view"], ["transformer", "connectors"])
    memory = tiny["components"]
    cfg = memory["transformer"].config
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(1, cfg.in_channels, 3, 2, 2, generator=gen)
    text = _text_features(memory["connectors"], TEXT_MAX_TOKENS, gen)
    sigma = torch.tensor([0.6])
    outs = [
        predict_velocity(parts, video, None, text, sigma, sigma, fps=24.0)[0]
        for parts in (loaded, memory)
    ]
    assert torch.equal(outs[0], outs[1])


def _text_features(connectors: Any, tokens: int, gen: torch.Generator) -> dict:
    """Projected prompt features as `ltx.encode.encode_prompts` returns them."""
    from ltx.encode import project_text

    c = connectors.config
    stacked = torch.randn(1, tokens, c.caption_channels * c.text_proj_in_factor, generator=gen)
    mask = torch.zeros(1, tokens, dtype=torch.int64)
    mask[:, -5:] = 1
    return project_text(connectors, stacked, mask)


def test_the_pipeline_from_official_files_renders_what_the_original_renders(tiny: dict) -> None:
    from diffusers import LTX2Pipeline

    pipes = [load_pipeline(tiny["view"]), LTX2Pipeline(**tiny["components"])]
    frames = []
    for pipe in pipes:
        pipe.set_progress_bar_config(disable=True)
        out = pipe(
            prompt="a red cat",
            width=64,
            height=64,
            num_frames=9,
            num_inference_steps=2,
            guidance_scale=1.0,
            generator=torch.Generator().manual_seed(1),
            output_type="np",
            return_dict=False,
        )
        frames.append(torch.as_tensor(out[0]))
    assert torch.equal(frames[0], frames[1])


def test_a_file_of_another_version_is_refused_in_one_line(tiny: dict) -> None:
    other = {"2.0": "2.3", "2.3": "2.5", "2.5": "2.0"}[tiny["version"]]
    cfg = tiny["cfg"].model_copy(update={"ltx_version": other})
    with pytest.raises(UserError) as err:
        ensure_model(cfg, tiny["root"] / "other")
    message = str(err.value)
    assert "\n" not in message and f"LTX-{other}" in message
    # a layout error for a layout mismatch, a version error naming both when the layout fits
    if {other, tiny["version"]} == {"2.0", "2.3"}:
        assert f"expected an LTX-{other} checkpoint" in message
        assert f"found LTX-{tiny['version']}" in message and "model=ltx2" in message
    else:
        assert "one file per component" in message or "one checkpoint file" in message


def test_version_is_detected_from_tensors_without_metadata(tiny: dict, tmp_path: Path) -> None:
    from ltx.versions import detect_version

    transformer = _files(Path(tiny["cfg"].path))[0]
    if tiny["version"] == "2.5":
        transformer = next(p for p in _files(Path(tiny["cfg"].path)) if "diffusion" in str(p))
    with safe_open(str(transformer), "pt") as f:
        keys = list(f.keys())
    assert detect_version(keys) == tiny["version"]


@pytest.mark.parametrize("tiny", ["2.5"], indirect=True)  # 2.5 carries its text encoder
def test_2_5_refuses_a_stock_gemma_and_another_gemma_version(tiny: dict, tmp_path: Path) -> None:
    source = Path(tiny["cfg"].path)
    for case in ("stock", "version"):
        copy = tmp_path / case
        shutil.copytree(source, copy)
        text = next((copy / "text_encoders").iterdir())
        with safe_open(str(text), "pt") as f:
            meta = f.metadata()
        sd = load_file(text)
        if case == "stock":
            sd = {k: v for k, v in sd.items() if not k.startswith("text_embedding_projection.")}
        else:
            meta["gemma_config"] = meta["gemma_config"].replace("gemma4-tiny-ltx-v1", "other")
        save_file(sd, text, metadata=meta)
        cfg = tiny["cfg"].model_copy(update={"path": str(copy)})
        match = "stock Gemma 4" if case == "stock" else "Gemma version other, but"
        with pytest.raises(UserError, match=match):
            ensure_model(cfg, tmp_path / f"models-{case}")


@pytest.mark.parametrize("tiny", ["2.0", "2.3"], indirect=True)
def test_2_0_and_2_3_need_the_gemma_folder(tiny: dict, tmp_path: Path) -> None:
    cfg = tiny["cfg"].model_copy(update={"text_encoder_path": None})
    with pytest.raises(UserError, match=r"model\.text_encoder_path=<local Gemma 3 folder>"):
        ensure_model(cfg, tmp_path)


def _single_file_23(root: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """A tiny 2.3 checkpoint (weights of `seed`), the tiny folder (configs), a Gemma folder."""
    folder = ensure_model(ModelConfig(name="t", source="tiny", ltx_version="2.3"), root)
    ckpt = save_official(build_tiny_components(seed, version="2.3"), root / f"s{seed}", "2.3")
    gemma = root / "gemma"
    if not gemma.exists():
        shutil.copytree(folder / "text_encoder", gemma)
        for p in (folder / "tokenizer").iterdir():
            shutil.copy(p, gemma / p.name)
    return ckpt, folder, gemma


def _cfg_23(path: Path, folder: Path, gemma: Path, **extra: str) -> ModelConfig:
    return ModelConfig(
        name="t",
        source="official",
        ltx_version="2.3",
        path=str(path),
        text_encoder_path=str(gemma),
        config_dir=str(folder),
        **extra,
    )


def test_a_quantised_transformer_is_refused_naming_the_bf16_file(tmp_path: Path) -> None:
    ckpt, folder, gemma = _single_file_23(tmp_path)
    sd = load_file(ckpt)
    key = "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"
    sd[key] = sd[key].to(torch.float8_e4m3fn)  # ltx-core's fp8 layout: float8 + a scale
    sd[key.replace(".weight", ".weight_scale")] = torch.tensor(1.0)
    fp8 = tmp_path / "ltx-2.3-22b-dev-fp8.safetensors"
    save_file(sd, fp8)
    cfg = _cfg_23(fp8, folder, gemma)
    with pytest.raises(
        UserError,
        match=r"quantised transformer \(fp8 e4m3 weights\).*"
        r"use ltx-2\.3-22b-dev\.safetensors",
    ):
        ensure_model(cfg, tmp_path / "models")


def test_renders_go_through_the_named_distilled_transformer(tmp_path: Path) -> None:
    """`model.inference_path`: renders load that transformer and sample on the distilled
    sigma list; training and the export check keep the dev weights."""
    from ltx.sampling import generate
    from ltx.versions import DISTILLED_SIGMAS

    dev, folder, gemma = _single_file_23(tmp_path, seed=0)
    distilled = _single_file_23(tmp_path, seed=1)[0].rename(tmp_path / "ltx-2.3-distilled.sft")
    cfg = _cfg_23(dev, folder, gemma, inference_path=str(distilled))
    view = ensure_model(cfg, tmp_path / "models")
    training, rendering = load_pipeline(view), load_pipeline(view, inference=True)
    memory = {s: build_tiny_components(s, version="2.3")["transformer"] for s in (0, 1)}
    for pipe, seed in ((training, 0), (rendering, 1)):
        for key, value in memory[seed].state_dict().items():
            assert torch.equal(pipe.transformer.state_dict()[key], value)
    seen: list = []
    rendering.transformer.register_forward_hook(
        lambda m, a, kw, o: seen.append(kw["timestep"]), with_kwargs=True
    )
    generate(
        rendering,
        ["a cat"],
        [0],
        width=64,
        height=64,
        frames=9,
        fps=24.0,
        steps=30,
        guidance_scale=4.0,
    )
    # one call per sigma (no CFG doubling): the distilled list, unshifted
    levels = [float(t.flatten()[0]) / 1000 for t in seen]
    assert levels == pytest.approx(list(DISTILLED_SIGMAS), abs=1e-6)


def test_training_on_a_distilled_checkpoint_warns_why(tmp_path: Path) -> None:
    ckpt, folder, gemma = _single_file_23(tmp_path)
    distilled = ckpt.rename(tmp_path / "ltx-2.3-22b-distilled.safetensors")
    cfg = _cfg_23(distilled, folder, gemma)
    with pytest.warns(UserWarning, match="distilled checkpoint: a LoRA trained on it"):
        ensure_model(cfg, tmp_path / "models")


def test_a_file_without_a_transformer_says_what_it_expected(tmp_path: Path) -> None:
    ckpt, folder, gemma = _single_file_23(tmp_path)
    vae_only = tmp_path / "vae.safetensors"
    save_file({k: v for k, v in load_file(ckpt).items() if k.startswith("vae.")}, vae_only)
    with pytest.raises(UserError, match=r"expected the LTX-2\.3 transformer, found no "):
        ensure_model(_cfg_23(vae_only, folder, gemma), tmp_path / "models")
