"""Training options beyond the defaults: adapter kinds, caption dropout, gradient checkpointing,
8-bit AdamW, IC-LoRA on edge references, validation videos, MLflow, and refused inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from stagekit.errors import UserError
from stagekit.hashing import sha256_file
from tests.integration.conftest import TINY
from tests.integration.train_job import LINEAGE
from trainer.config import LoraConfig, PreprocessConfig, TrainerConfig
from trainer.train import train

STEPS = 4


def run(cache_dir: Path, out: Path, model_path: Path, lora: LoraConfig | None = None, **opts):
    cfg = TrainerConfig(max_steps=STEPS, log_every=1, warmup_steps=1, **opts)
    return train(
        cache_dir,
        out / "train",
        model_path,
        TINY,
        lora or LoraConfig(rank=4, alpha=8),
        cfg,
        seed=0,
        trigger="zorblat",
        lineage=LINEAGE,
        resolved_config={},
        checkpoint_root=out / "ckpt",
    )


def losses(out: Path) -> list[float]:
    lines = (out / "train/metrics.jsonl").read_text().splitlines()
    return [json.loads(r)["loss"] for r in lines]


def header(path: Path) -> dict[str, str]:
    with safe_open(path, "pt") as f:
        return f.metadata()


# ------------------------------------------------------------------------------ adapter kinds


@pytest.mark.parametrize("kind", ["dora", "lokr"])
def test_dora_and_lokr_train_and_export_files_that_load_back(
    kind, cache_dir, model_path, tmp_path
) -> None:
    run(cache_dir, tmp_path, model_path, LoraConfig(kind=kind, rank=4, alpha=8))
    adapter = tmp_path / "train/adapter"
    peft_file, comfy_file = adapter / "adapter.safetensors", adapter / "comfyui.safetensors"
    meta, comfy_meta = header(peft_file), header(comfy_file)
    assert meta["adapter_kind"] == comfy_meta["adapter_kind"] == kind
    assert meta["format"] == ("peft" if kind == "lokr" else "diffusers")
    assert "not run inside ComfyUI" in comfy_meta["verified_by"]  # said, not pretended
    comfy = load_file(comfy_file)
    assert all(k.startswith("diffusion_model.") for k in comfy)
    if kind == "dora":
        scales = [v for k, v in comfy.items() if k.endswith(".dora_scale")]
        assert scales and all(v.ndim == 2 and v.shape[1] == 1 for v in scales)
        assert any(k.endswith(".lora_magnitude_vector") for k in load_file(peft_file))
    else:
        assert any(k.endswith(".lokr_w1") for k in comfy)
        assert any(k.endswith(".lokr_w2") for k in comfy)
        assert "lokr_config" in meta
        w1 = [v for k, v in load_file(peft_file).items() if k.endswith("lokr_w1")]
        assert sum(v.abs().sum().item() for v in w1) > 0  # w1 starts at zero: training moved it
    summary = json.loads((tmp_path / "train/train.json").read_text())
    assert summary["params"]["kind"] == kind


@pytest.mark.parametrize("kind", ["dora", "lokr"])
def test_a_wrong_comfyui_file_fails_verification(kind, cache_dir, model_path, tmp_path) -> None:
    """The check is real: a ComfyUI file whose numbers differ from the trained adapter's is
    rejected (here the LoKr scale or DoRA magnitude is off by 10 %)."""
    from ltx.loading import load_components, load_pipeline
    from ltx.lora import add_lora
    from trainer.data import collate, load_split
    from trainer.export import export_adapter, verify_export

    transformer = load_components(model_path, ["transformer"])["transformer"]
    add_lora(transformer, 4, 8, 0.0, "video_attention", kind=kind)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in transformer.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
    files = export_adapter(transformer.eval(), tmp_path, {"run_id": "x"})
    pipe, batch = load_pipeline(model_path), collate(load_split(cache_dir, "train")[:1])
    assert set(verify_export(pipe, transformer, files, batch)) == {f.name for f in files}
    comfy = load_file(files[1])
    key = next(k for k in sorted(comfy) if k.endswith((".lokr_w2", ".dora_scale")))
    comfy[key] = comfy[key] * 1.1
    save_file(comfy, files[1], metadata=header(files[1]))
    with pytest.raises(RuntimeError, match=r"comfyui\.safetensors loaded into the pipeline"):
        verify_export(pipe, transformer, files, batch)


# ---------------------------------------------------------------------------- caption dropout


def test_empty_prompt_is_cached_once_with_its_fingerprint(cache_dir, model_path) -> None:
    from ltx.encode import encode_prompts
    from ltx.loading import load_pipeline
    from trainer.cache import EMPTY_PROMPT, load_entry, text_inputs

    index = json.loads((cache_dir / "index.json").read_text())
    entry = index[EMPTY_PROMPT]
    assert entry["fingerprint"] and entry["file"] == "_empty_prompt.safetensors"
    cached = text_inputs(load_entry(cache_dir, entry))  # stored compactly, as every shard
    expected = encode_prompts(load_pipeline(model_path), [""])
    assert set(cached) == set(expected)
    assert all(torch.equal(cached[k], v) for k, v in expected.items())


def test_caption_dropout_swaps_in_the_empty_prompt_deterministically(cache_dir) -> None:
    from dataclasses import replace

    from trainer.data import collate, drop_captions, load_split
    from trainer.runtime import empty_prompt

    index = json.loads((cache_dir / "index.json").read_text())
    empty = empty_prompt(cache_dir, index)
    samples = load_split(cache_dir, "train")
    key = samples[0].shape_key
    same = [x for x in samples if x.shape_key == key][:4]
    assert len(same) == 4
    batch = collate(same)
    dropped = [
        drop_captions(batch, empty, 0.5, seed=0, step=s, micro=0).text["prompt_features"]
        for s in range(1, 51)
    ]
    is_empty = [[torch.equal(d[i], empty["prompt_features"][0]) for i in range(4)] for d in dropped]
    share = sum(map(sum, is_empty)) / 200
    assert 0.4 < share < 0.6  # p = 0.5 over 200 draws
    again = drop_captions(batch, empty, 0.5, seed=0, step=7, micro=0)
    assert torch.equal(again.text["prompt_features"], dropped[6])  # a pure function of step
    assert drop_captions(batch, empty, 0.0, 0, 1, 0) is batch
    # two ranks with half the batch each drop exactly what one process with all of it drops
    halves = [
        drop_captions(
            replace(collate(same[2 * r : 2 * r + 2]), shard=(r, 2)),
            empty, 0.5, seed=0, step=7, micro=0,
        ).text["prompt_features"]
        for r in range(2)
    ]  # fmt: skip
    assert torch.equal(torch.cat(halves), again.text["prompt_features"])


def test_caption_dropout_changes_training_and_repeats_exactly(
    cache_dir, model_path, tmp_path
) -> None:
    run(cache_dir, tmp_path / "a", model_path, caption_dropout=0.5)
    run(cache_dir, tmp_path / "b", model_path, caption_dropout=0.5)
    run(cache_dir, tmp_path / "c", model_path)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert losses(tmp_path / "a") != losses(tmp_path / "c")


def test_caption_dropout_on_a_cache_without_the_empty_prompt_says_to_preprocess(
    cache_dir, model_path, tmp_path
) -> None:
    from stagekit.errors import UserError

    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    index = json.loads((copy / "index.json").read_text())
    del index["empty_prompt"]
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="re-run `ltx-lora preprocess`"):
        run(copy, tmp_path, model_path, caption_dropout=0.1)


def test_a_flipped_bit_in_a_cache_shard_stops_training_naming_the_shard(
    workspace, cache_dir, model_path, tmp_path
) -> None:
    """One bit of one latent value changed after preprocess: safetensors still loads it, but
    its sha256 no longer matches index.json: training stops before anything is written, naming
    the shard; preprocess then re-encodes exactly that shard and training goes through."""
    from trainer.cache import build_cache

    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    index = json.loads((copy / "index.json").read_text())
    entry = next(e for e in index["entries"].values() if e["split"] == "train")
    shard = copy / entry["file"]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x04  # inside the last tensor's values, not the header
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match=rf"{shard.name} is missing or damaged.*sha256"):
        run(copy, tmp_path / "bad", model_path)
    assert not (tmp_path / "bad/train").exists()
    summary = build_cache(
        workspace.captioned("sample") / "manifest.jsonl",
        workspace.curated("sample"),
        copy,
        model_path,
        TINY,
        PreprocessConfig(),
        progress=False,
    )
    assert summary["encoded"] == 1
    assert shard.read_bytes() == (cache_dir / entry["file"]).read_bytes()
    run(copy, tmp_path / "good", model_path)
    run(cache_dir, tmp_path / "reference", model_path)
    assert losses(tmp_path / "good") == losses(tmp_path / "reference")


# ------------------------------------------------------------------ memory and the optimiser


def test_gradient_checkpointing_trains_the_same_adapter(cache_dir, model_path, tmp_path) -> None:
    run(cache_dir, tmp_path / "plain", model_path)
    run(cache_dir, tmp_path / "ckpt", model_path, gradient_checkpointing=True)
    assert losses(tmp_path / "ckpt") == pytest.approx(losses(tmp_path / "plain"), abs=1e-6)
    a, b = (
        load_file(tmp_path / d / "train/adapter/adapter.safetensors") for d in ("plain", "ckpt")
    )
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_adamw8bit_on_cpu_is_a_clear_config_error(cache_dir, model_path, tmp_path) -> None:
    from stagekit.errors import ConfigError

    with pytest.raises(ConfigError, match="adamw8bit needs a CUDA GPU"):
        run(cache_dir, tmp_path, model_path, optimizer="adamw8bit")
    assert not (tmp_path / "ckpt").exists()  # refused before an (unfinished) run existed
    run(cache_dir, tmp_path, model_path)  # so the next run is not blocked


def test_reference_video_on_a_cache_without_references_is_refused_up_front(
    cache_dir, model_path, tmp_path
) -> None:
    from stagekit.errors import UserError

    with pytest.raises(UserError, match=r"preprocess\.reference=edges"):
        run(cache_dir, tmp_path, model_path, strategy="reference_video")
    assert not (tmp_path / "ckpt").exists()


# ----------------------------------------------------------------------- IC-LoRA (reference)


@pytest.fixture(scope="module")
def edge_cache(workspace, model_path, tmp_path_factory) -> Path:
    from trainer.cache import build_cache

    dest = tmp_path_factory.mktemp("edges") / "cache"
    build_cache(
        workspace.captioned("sample") / "manifest.jsonl",
        workspace.curated("sample"),
        dest,
        model_path,
        TINY,
        PreprocessConfig(reference="edges"),
        progress=False,
    )
    return dest


def test_edge_references_are_cached_beside_each_clip(edge_cache) -> None:
    from trainer.data import load_split

    samples = load_split(edge_cache, "train")
    assert samples and all(
        s.tensors["reference"].shape == s.tensors["video"].shape for s in samples
    )
    assert not torch.equal(samples[0].tensors["reference"], samples[0].tensors["video"])


def test_edge_frames_mark_edges_of_a_square() -> None:
    import numpy as np

    from ltx.controls import edge_frames

    frames = np.zeros((1, 8, 8, 3), np.uint8)
    frames[:, 2:6, 2:6] = 255
    edges = edge_frames(frames)
    assert edges.shape == frames.shape and edges.dtype == np.uint8
    assert edges[0, 0, 0, 0] == 0 and edges[0, 4, 4, 0] == 0  # flat: no edge
    assert edges[0, 2, 4, 0] > 100 and edges[0, 4, 2, 0] > 100  # on the square's sides


def test_reference_video_trains_on_the_edge_cache(edge_cache, model_path, tmp_path) -> None:
    run(edge_cache, tmp_path, model_path, strategy="reference_video")
    assert all(0 < x < 100 for x in losses(tmp_path))


def test_downscaled_references_train_and_tell_the_consumers_that_read_it(
    workspace, model_path, tmp_path
) -> None:
    """preprocess.reference_downscale=2: references cached at half the clip's latent height and
    width; an IC-LoRA trains on them; the ltx-pipelines and ComfyUI files carry
    `reference_downscale_factor: 2` (they read it from the LoRA), the diffusers file does not
    (diffusers takes it as a pipeline argument), train.json records it."""
    from trainer.cache import build_cache

    cache = tmp_path / "cache"
    build_cache(
        workspace.captioned("sample") / "manifest.jsonl",
        workspace.curated("sample"),
        cache,
        model_path,
        TINY,
        PreprocessConfig(reference="edges", reference_downscale=2),
        progress=False,
    )
    entry = next(iter(json.loads((cache / "index.json").read_text())["entries"].values()))
    shard = load_file(cache / entry["file"])
    c, f, h, w = shard["video"].shape
    assert shard["reference"].shape == (c, f, h // 2, w // 2)
    run(cache, tmp_path / "ic", model_path, strategy="reference_video")
    adapter = tmp_path / "ic/train/adapter"
    assert header(adapter / "ltx-pipelines.safetensors")["reference_downscale_factor"] == "2"
    assert header(adapter / "comfyui.safetensors")["reference_downscale_factor"] == "2"
    assert "reference_downscale_factor" not in header(adapter / "adapter.safetensors")
    train_json = json.loads((tmp_path / "ic/train/train.json").read_text())
    assert train_json["params"]["reference_downscale_factor"] == "2"


def test_ic_lora_validation_render_appends_the_held_out_reference(
    edge_cache, model_path, tmp_path
) -> None:
    """A reference_video validation render goes through LTX2InContextPipeline with the held-out
    clip's reference (its cached latents decoded): every transformer call holds the video's
    tokens, then the reference's at timestep 0."""
    from ltx.loading import load_components
    from trainer.runtime import ValidationSampler
    from trainer.strategies import get_strategy

    index = json.loads((edge_cache / "index.json").read_text())
    cfg = TrainerConfig(validation_steps=2)
    sampler = ValidationSampler(edge_cache, index, model_path, TINY, tmp_path, cfg, seed=0)
    comps = load_components(model_path, ["transformer", "connectors"])
    calls: list[tuple[int, torch.Tensor]] = []
    comps["transformer"].register_forward_pre_hook(
        lambda _m, _a, kw: calls.append((kw["hidden_states"].shape[1], kw["timestep"])),
        with_kwargs=True,
    )
    sampler.run(2, get_strategy("reference_video"), comps, None)
    assert (tmp_path / "samples/step-000002.mp4").is_file()
    _, f, h, w = load_file(edge_cache / sampler.entry["file"])["video"].shape
    assert len(calls) == 2
    for tokens, timestep in calls:
        assert tokens == 2 * f * h * w
        clean = (timestep.reshape(-1) == 0).nonzero().flatten().tolist()
        assert clean == list(range(f * h * w, 2 * f * h * w))


# -------------------------------------------------------------- validation videos and MLflow


def test_validation_videos_and_mlflow_metrics(cache_dir, model_path, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from ltx.sampling import read_clip
    from registry.store import ensure_schema

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_schema(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LTX_LORA_PARENT_RUN_ID", "parent-123")
    run(cache_dir, tmp_path / "val", model_path, validation_every=2, validation_steps=2)
    samples = sorted((tmp_path / "val/train/samples").glob("*.mp4"))
    assert [p.name for p in samples] == ["step-000002.mp4", "step-000004.mp4"]
    index = json.loads((cache_dir / "index.json").read_text())
    entry = next(e for _, e in sorted(index["entries"].items()) if e["split"] == "validation")
    width, height, frames = entry["bucket"]
    assert read_clip(samples[0]).video.shape == (frames, height, width, 3)
    # sampling leaves training as it was: the same losses as a run without samples
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    run(cache_dir, tmp_path / "plain", model_path)
    assert losses(tmp_path / "val") == losses(tmp_path / "plain")

    client = MlflowClient(tracking_uri=uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "ltx-lora-train"]
    (found,) = client.search_runs([exp.experiment_id])
    assert found.data.tags["mlflow.parentRunId"] == "parent-123"
    assert found.info.status == "FINISHED"
    history = {m: client.get_metric_history(found.info.run_id, m) for m in ("loss", "lr")}
    assert [m.step for m in history["loss"]] == [1, 2, 3, 4]
    assert [m.value for m in history["loss"]] == pytest.approx(losses(tmp_path / "val"))
    assert {"grad_norm", "val_loss"} <= set(found.data.metrics)
    assert "step" not in found.data.metrics
    assert exp.artifact_location.endswith("val/tracking")  # beside the run, not in the cwd
    assert found.data.params["lora.rank"] == "4"


# ----------------------------------------------------------------------------- refused input


def test_cache_of_another_model_is_refused(cache_dir, model_path, tmp_path) -> None:
    from stagekit.errors import UserError

    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    index = json.loads((copy / "index.json").read_text())
    index["identity"]["model"] = "f" * 64
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="was made for model ffffffffffff"):
        run(copy, tmp_path, model_path)


def test_a_cache_without_training_clips_is_a_clear_error(cache_dir, model_path, tmp_path):
    from stagekit.errors import UserError

    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    index = json.loads((copy / "index.json").read_text())
    index["entries"] = {k: e for k, e in index["entries"].items() if e["split"] != "train"}
    (copy / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="no training clips in the cache"):
        run(copy, tmp_path, model_path)


def test_wandb_logs_offline_into_the_run_folder(cache_dir, model_path, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")  # the trainer forces offline regardless
    run(cache_dir, tmp_path / "w", model_path, trackers=["wandb"])
    runs = list((tmp_path / "w/tracking/wandb/wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert losses(tmp_path / "w")  # trained and exported as usual


def test_a_run_stopped_by_the_loss_guard_ends_failed_in_mlflow(
    cache_dir, model_path, tmp_path, monkeypatch
):
    from mlflow.tracking import MlflowClient

    from registry.store import ensure_schema
    from stagekit.errors import UserError

    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    index = json.loads((copy / "index.json").read_text())
    for entry in index["entries"].values():  # NaN latents (as a bad encode): not finite
        tensors = load_file(copy / entry["file"])
        tensors["video"] = torch.full_like(tensors["video"], float("nan"))
        save_file(tensors, copy / entry["file"])
        entry["sha256"] = sha256_file(copy / entry["file"])
    (copy / "index.json").write_text(json.dumps(index))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_schema(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(UserError, match="is not finite"):
        run(copy, tmp_path, model_path)
    client = MlflowClient(tracking_uri=uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "ltx-lora-train"]
    (found,) = client.search_runs([exp.experiment_id])
    assert found.info.status == "FAILED"


# ------------------------------------------------------------------------------------ audio


def adapter_keys(out: Path) -> list[str]:
    with safe_open(out / "train/adapter/adapter.safetensors", "pt") as f:
        return list(f.keys())


def test_a_run_without_audio_trains_no_audio_module(cache_dir, model_path, tmp_path) -> None:
    """lora.targets=all on the same cache: the joint run adapts the audio, audio-cross and
    audio feed-forward modules and logs each modality's loss (summing to the loss); the
    video-only run has not one audio key in its adapter, and logs the video loss alone."""
    every = LoraConfig(rank=4, alpha=8, targets="all")
    run(cache_dir, tmp_path / "joint", model_path, every, strategy="audio_video")
    run(cache_dir, tmp_path / "video", model_path, every, strategy="text_to_video")
    joint, video = adapter_keys(tmp_path / "joint"), adapter_keys(tmp_path / "video")
    audio_keys = [k for k in joint if "audio" in k]
    assert {"audio_attn1", "audio_to_video_attn", "video_to_audio_attn", "audio_ff"} <= {
        part for k in audio_keys for part in k.split(".")
    }
    assert not [k for k in video if "audio" in k]
    assert sorted(video) == sorted(k for k in joint if "audio" not in k)
    rows = [
        json.loads(r) for r in (tmp_path / "joint/train/metrics.jsonl").read_text().splitlines()
    ]
    for row in rows:  # log_every=1: each row is one step
        assert row["loss_audio"] > 0 and row["loss_video"] > 0
        assert row["loss"] == pytest.approx(row["loss_video"] + row["loss_audio"], rel=1e-6)
    rows = [
        json.loads(r) for r in (tmp_path / "video/train/metrics.jsonl").read_text().splitlines()
    ]
    assert all("loss_audio" not in r and r["loss"] == pytest.approx(r["loss_video"]) for r in rows)


def test_text_to_audio_trains_only_what_writes_into_the_audio_stream(
    cache_dir, model_path, tmp_path
) -> None:
    """trainer.strategy=text_to_audio with lora.targets=audio: every adapter key is on an audio
    attention, the audio feed-forward or the video-to-audio attention (queries from audio), the
    loss is the audio's; a video-only target set is refused naming lora.targets=audio."""
    audio = LoraConfig(rank=4, alpha=8, targets="audio")
    run(cache_dir, tmp_path / "tta", model_path, audio, strategy="text_to_audio")
    keys = adapter_keys(tmp_path / "tta")
    modules = {k.split(".")[3] for k in keys}  # transformer.transformer_blocks.<i>.<module>
    assert modules == {"audio_attn1", "audio_attn2", "audio_ff", "video_to_audio_attn"}
    rows = [json.loads(r) for r in (tmp_path / "tta/train/metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == pytest.approx(r["loss_audio"]) and "loss_video" not in r for r in rows)
    with pytest.raises(UserError, match=r"set lora\.targets=audio"):
        run(cache_dir, tmp_path / "refused", model_path, strategy="text_to_audio")


# -------------------------------------------------------------------------------- keyframes


@pytest.fixture(scope="module")
def keyframe_cache(workspace, model_path, tmp_path_factory) -> Path:
    """The sample cache with each clip's first and last frame encoded as keyframe images."""
    from trainer.cache import build_cache

    cache = tmp_path_factory.mktemp("keyframes") / "cache"
    build_cache(
        workspace.captioned("sample") / "manifest.jsonl",
        workspace.curated("sample"),
        cache,
        model_path,
        TINY,
        PreprocessConfig(keyframes="first_last"),
        progress=False,
    )
    return cache


def test_keyframes_preprocess_and_train_end_to_end(
    keyframe_cache, cache_dir, model_path, tmp_path
) -> None:
    """preprocess.keyframes=first_last caches each clip's first and last frame encoded on its
    own ([C, 1, H, W] beside the video); trainer.strategy=keyframes trains on them; a cache
    without them is refused before a checkpoint folder exists, naming the setting."""
    index = json.loads((keyframe_cache / "index.json").read_text())
    shard = load_file(keyframe_cache / next(iter(index["entries"].values()))["file"])
    c, _, h, w = shard["video"].shape
    assert shard["keyframe_first"].shape == shard["keyframe_last"].shape == (c, 1, h, w)
    run(keyframe_cache, tmp_path / "kf", model_path, strategy="keyframes")
    assert all(loss > 0 and loss == loss for loss in losses(tmp_path / "kf"))
    assert (tmp_path / "kf/train/adapter/adapter.safetensors").is_file()
    with pytest.raises(UserError, match=r"preprocess\.keyframes=first_last"):
        run(cache_dir, tmp_path / "refused", model_path, strategy="keyframes")
    assert not (tmp_path / "refused/ckpt").exists()


@pytest.mark.parametrize("strategy", ["text_to_video", "image_to_video", "keyframes"])
def test_validation_renders_are_conditioned_as_the_mode_is_used(
    strategy, keyframe_cache, model_path, tmp_path
) -> None:
    """A validation render of each mode through ltx.sampling.generate, audio muxed in: the
    held-out clip's first frame (and last, for keyframes) conditions it through
    LTX2ConditionPipeline. Every transformer call then holds the first latent frame's tokens at
    timestep 0 (and for keyframes the appended last image's, after the video's); text_to_video
    conditions on nothing."""
    from ltx.loading import load_components
    from ltx.sampling import read_clip
    from trainer.runtime import ValidationSampler
    from trainer.strategies import get_strategy

    index = json.loads((keyframe_cache / "index.json").read_text())
    cfg = TrainerConfig(validation_steps=2)
    sampler = ValidationSampler(keyframe_cache, index, model_path, TINY, tmp_path, cfg, seed=0)
    comps = load_components(model_path, ["transformer", "connectors"])
    calls: list[tuple[int, torch.Tensor]] = []
    comps["transformer"].register_forward_pre_hook(
        lambda _m, _a, kw: calls.append((kw["hidden_states"].shape[1], kw["timestep"])),
        with_kwargs=True,
    )
    sampler.run(2, get_strategy(strategy), comps, None)
    width, height, frames = sampler.entry["bucket"]
    clip = read_clip(tmp_path / "samples/step-000002.mp4")
    assert clip.video.shape == (frames, height, width, 3) and clip.audio is not None
    _, f, h, w = load_file(keyframe_cache / sampler.entry["file"])["video"].shape
    appended = h * w if strategy == "keyframes" else 0
    assert len(calls) == 2  # one per step, guidance 1
    for tokens, timestep in calls:
        assert tokens == f * h * w + appended
        clean = (timestep.reshape(-1) == 0).nonzero().flatten().tolist()
        if strategy == "text_to_video":
            assert clean == []
        else:
            first = list(range(h * w))
            assert clean == first + list(range(f * h * w, f * h * w + appended))
