"""Multi-reference IC-LoRA end to end on a generated dataset with reference files: each raw
clip `X.mp4` gets `X_ref0.png` (an edge still of its middle frame) and `X_ref1.mp4` (its
colours inverted, a 9-frame control). Curated and captioned by the real stages, cached with
preprocess.reference=files, trained with trainer.strategy=multi_reference on the tiny model
(headers, validation render) and through the CLI on the demo base."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from curation.caption import caption
from curation.card import load_card
from curation.curate import curate
from curation.media import write_clip
from curation.sample import generate_sample_dataset
from ltx.buckets import bucket_rules
from ltx.controls import edge_frames
from stagekit.files import read_jsonl
from stagekit.workspace import Workspace
from tests.integration.conftest import TINY, curation_config
from tests.integration.train_job import LINEAGE
from trainer.cache import build_cache, reference_keys
from trainer.config import LoraConfig, PreprocessConfig, TrainerConfig
from trainer.train import train

BIN = Path(sys.executable).parent


def add_reference_files(raw: Path) -> int:
    """`X_ref0.png` and `X_ref1.mp4` beside every raw clip `X.mp4`; returns the clips."""
    clips = sorted(raw.glob("*.mp4"))
    for clip in clips:
        with av.open(str(clip)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
            fps = float(c.streams.video[0].average_rate)
        middle = edge_frames(frames[len(frames) // 2][None])[0]
        Image.fromarray(middle).save(raw / f"{clip.stem}_ref0.png")
        write_clip(raw / f"{clip.stem}_ref1.mp4", [255 - f for f in frames[:9]], fps)
    return len(clips)


@pytest.fixture(scope="module")
def refs_ws(tmp_path_factory, model_path) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("refs"))
    generate_sample_dataset(ws.dataset("refs"))
    add_reference_files(ws.raw("refs"))
    card, cfg = load_card(ws.card("refs")), curation_config()
    curate(ws.raw("refs"), ws.curated("refs"), card, cfg, bucket_rules(model_path))
    caption(ws.curated("refs"), ws.raw("refs"), ws.captioned("refs"), card, cfg.caption)
    return ws


@pytest.fixture(scope="module")
def refs_cache(refs_ws, model_path) -> Path:
    build_cache(
        refs_ws.captioned("refs") / "manifest.jsonl",
        refs_ws.curated("refs"),
        refs_ws.cache("refs"),
        model_path,
        TINY,
        PreprocessConfig(reference="files", reference_downscale=2),
        progress=False,
    )
    return refs_ws.cache("refs")


def header(path: Path) -> dict[str, str]:
    with safe_open(path, "pt") as f:
        return f.metadata()


def test_each_reference_file_is_cached_on_its_own_at_the_downscaled_size(
    refs_ws, refs_cache, model_path
) -> None:
    t = bucket_rules(model_path).temporal
    rows = read_jsonl(refs_ws.captioned("refs") / "manifest.jsonl")
    assert rows and all(
        [r["kind"] for r in row["references"]] == ["still", "video"] for row in rows
    )
    index = json.loads((refs_cache / "index.json").read_text())
    for row in rows:
        shard = load_file(refs_cache / index["entries"][row["id"]]["file"])
        c, _, h, w = shard["video"].shape
        assert reference_keys(shard) == ["reference.0", "reference.1"]
        assert shard["reference.0"].shape == (c, 1, h // 2, w // 2)  # the still: one frame
        latent_frames = (row["references"][1]["frames"] - 1) // t + 1  # the 9-frame control
        assert shard["reference.1"].shape == (c, latent_frames, h // 2, w // 2)


def test_multi_reference_trains_and_tells_the_consumers_that_read_the_scale(
    refs_cache, model_path, tmp_path
) -> None:
    """Two steps; the ltx-pipelines file carries `reference_downscale_factor: 2` and
    `reference_temporal_scale_factor: 1` (ltx-pipelines reads both), ComfyUI's only the
    downscale factor (the only one its IC-LoRA node reads), diffusers' neither; no file has
    `reference_spatial_scale_factor` (no consumer reads it)."""
    cfg = TrainerConfig(max_steps=2, log_every=1, warmup_steps=1, strategy="multi_reference")
    train(
        refs_cache, tmp_path / "train", model_path, TINY, LoraConfig(rank=4, alpha=8), cfg,
        seed=0, trigger="zorblat", lineage=LINEAGE, resolved_config={},
        checkpoint_root=tmp_path / "ckpt",
    )  # fmt: skip
    losses = [json.loads(r)["loss"] for r in (tmp_path / "train/metrics.jsonl").open()]
    assert len(losses) == 2 and all(0 < x < 100 for x in losses)
    adapter = tmp_path / "train/adapter"
    pipelines = header(adapter / "ltx-pipelines.safetensors")
    comfy = header(adapter / "comfyui.safetensors")
    diffusers = header(adapter / "adapter.safetensors")
    assert pipelines["reference_downscale_factor"] == "2"
    assert pipelines["reference_temporal_scale_factor"] == "1"
    assert comfy["reference_downscale_factor"] == "2"
    assert "reference_temporal_scale_factor" not in comfy
    assert not {k for k in diffusers if k.startswith("reference_")}
    assert not any("reference_spatial_scale_factor" in h for h in (pipelines, comfy, diffusers))


def test_validation_render_appends_the_held_out_reference_sheet(refs_cache, model_path, tmp_path):
    """The render goes through LTX2InContextPipeline (ltx.sampling.generate, as evaluation)
    with the held-out clip's two references decoded from the cache: every transformer call
    holds the video's tokens, then the still's and the clip's at timestep 0."""
    from ltx.loading import load_components
    from ltx.sampling import read_clip
    from trainer.runtime import ValidationSampler
    from trainer.strategies import get_strategy

    index = json.loads((refs_cache / "index.json").read_text())
    cfg = TrainerConfig(validation_steps=2)
    sampler = ValidationSampler(refs_cache, index, model_path, TINY, tmp_path, cfg, seed=0)
    assert sampler.entry["split"] == "validation"
    comps = load_components(model_path, ["transformer", "connectors"])
    calls: list[tuple[int, torch.Tensor]] = []
    comps["transformer"].register_forward_pre_hook(
        lambda _m, _a, kw: calls.append((kw["hidden_states"].shape[1], kw["timestep"])),
        with_kwargs=True,
    )
    sampler.run(2, get_strategy("multi_reference"), comps, None)
    width, height, frames = sampler.entry["bucket"]
    assert read_clip(tmp_path / "samples/step-000002.mp4").video.shape == (frames, height, width, 3)
    shard = load_file(refs_cache / sampler.entry["file"])
    n = shard["video"][0].numel()
    refs = shard["reference.0"][0].numel() + shard["reference.1"][0].numel()
    assert len(calls) == 2
    for tokens, timestep in calls:
        assert tokens == n + refs
        clean = (timestep.reshape(-1) == 0).nonzero().flatten().tolist()
        assert clean == list(range(n, n + refs))


@pytest.mark.slow
def test_the_cli_trains_multi_reference_on_the_demo_base(tmp_path) -> None:
    """`ltx-lora curate / caption / preprocess preprocess.reference=files / train
    trainer.strategy=multi_reference` on the demo base (model=demo, the default)."""
    ws = Workspace(tmp_path)
    generate_sample_dataset(ws.dataset("refs"))
    add_reference_files(ws.raw("refs"))
    steps = [
        ["curate"],
        ["caption"],
        ["preprocess", "preprocess.reference=files"],
        ["train", "trainer.strategy=multi_reference", "trainer.max_steps=2",
         "trainer.trackers=[]", "trainer.warmup_steps=1"],
    ]  # fmt: skip
    for args in steps:
        cmd = [str(BIN / "ltx-lora"), "--workspace", str(tmp_path), args[0], "dataset=refs"]
        done = subprocess.run([*cmd, *args[1:]], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{args[0]}: {done.stderr[-3000:]}"
    out = ws.train("refs")
    assert json.loads((out / "train.json").read_text())["params"]["strategy"] == "multi_reference"
    assert header(out / "adapter/ltx-pipelines.safetensors")["reference_downscale_factor"] == "1"
