"""generate(): deterministic per seed, prompt-sensitive, adapters applied and removed; mp4 I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ltx.loading import load_components, load_pipeline
from ltx.lora import adapter_state_dict, add_lora
from ltx.lora_keys import to_comfyui
from ltx.sampling import Clip, generate, read_clip, write_clip
from stagekit.errors import UserError

# Small and without CFG (one transformer pass a step): each test makes several clips.
SIZE = {"width": 64, "height": 64, "frames": 9, "fps": 24.0, "steps": 2, "guidance_scale": 1.0}
CFG = {**SIZE, "guidance_scale": 3.0}


@pytest.fixture(scope="module")
def pipe(model_dir: Path):
    return load_pipeline(model_dir)


@pytest.fixture(scope="module")
def adapter_files(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same nonzero adapter (alpha != rank) in diffusers and ComfyUI layouts."""
    transformer = load_components(model_dir, ["transformer"])["transformer"]
    add_lora(transformer, rank=4, alpha=8, dropout=0.0, targets="video_attention_ff")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    sd = adapter_state_dict(transformer)
    out = tmp_path_factory.mktemp("adapters")
    save_file(sd, str(out / "diffusers.safetensors"))
    save_file(to_comfyui(sd), str(out / "comfyui.safetensors"))
    return {"diffusers": out / "diffusers.safetensors", "comfyui": out / "comfyui.safetensors"}


def _diff(a: Clip, b: Clip) -> float:
    return float(np.abs(a.video.astype(np.float32) - b.video.astype(np.float32)).mean())


def test_same_seed_same_clip(pipe) -> None:
    (a,) = generate(pipe, ["a red cat walks"], [3], **CFG)
    (b,) = generate(pipe, ["a red cat walks"], [3], **CFG)
    assert np.array_equal(a.video, b.video)
    assert np.array_equal(a.audio, b.audio)
    assert a.video.shape == (9, 64, 64, 3) and a.fps == 24.0 and a.sample_rate == 24000


def test_prompts_and_seeds_change_the_clip(pipe) -> None:
    cat, dog = generate(
        pipe, ["a red cat walks on grass", "a blue dog sleeps in a house"], [0], **CFG
    )
    (cat_seed1,) = generate(pipe, ["a red cat walks on grass"], [1], **CFG)
    assert _diff(cat, dog) > 1.0  # on the 0-255 scale
    assert _diff(cat, cat_seed1) > _diff(cat, dog)


def test_sizes_the_pipeline_would_change_are_refused(pipe) -> None:
    with pytest.raises(UserError, match="2k\\+1"):
        generate(pipe, ["x"], [0], **{**SIZE, "frames": 10})
    with pytest.raises(UserError, match="multiples of 32"):
        generate(pipe, ["x"], [0], **{**SIZE, "width": 40})


def test_prompt_major_order(pipe) -> None:
    clips = generate(pipe, ["one", "two"], [5, 6], **SIZE)
    (two_5,) = generate(pipe, ["two"], [5], **SIZE)
    (one_6,) = generate(pipe, ["one"], [6], **SIZE)
    assert len(clips) == 4
    assert np.array_equal(clips[1].video, one_6.video)
    assert np.array_equal(clips[2].video, two_5.video)


@pytest.mark.parametrize("layout", ["diffusers", "comfyui"])
def test_adapter_changes_output_then_is_removed(pipe, adapter_files, layout: str) -> None:
    (base,) = generate(pipe, ["a red cat"], [0], **SIZE)
    (adapted,) = generate(pipe, ["a red cat"], [0], adapter=adapter_files[layout], **SIZE)
    (after,) = generate(pipe, ["a red cat"], [0], **SIZE)
    assert _diff(base, adapted) > 1.0
    assert np.array_equal(base.video, after.video)
    assert not getattr(pipe.transformer, "peft_config", None)


def test_both_layouts_and_scale(pipe, adapter_files) -> None:
    (a,) = generate(pipe, ["x"], [0], adapter=adapter_files["diffusers"], **SIZE)
    (b,) = generate(pipe, ["x"], [0], adapter=adapter_files["comfyui"], **SIZE)
    (off,) = generate(
        pipe, ["x"], [0], adapter=adapter_files["diffusers"], adapter_scale=0.0, **SIZE
    )
    (base,) = generate(pipe, ["x"], [0], **SIZE)
    assert _diff(a, b) < 0.05
    assert _diff(off, base) < 0.05 < _diff(a, base)


def test_an_existing_training_adapter_is_kept(model_dir: Path, adapter_files) -> None:
    pipe = load_pipeline(model_dir)
    (base,) = generate(pipe, ["x"], [0], **SIZE)
    add_lora(pipe.transformer, rank=2, alpha=2, dropout=0.0, targets="video_attention")
    lora = {n: p for n, p in pipe.transformer.named_parameters() if "lora_B" in n}
    with torch.no_grad():
        for p in lora.values():
            p.fill_(0.2)
    (before,) = generate(pipe, ["x"], [0], **SIZE)
    generate(pipe, ["x"], [0], adapter=adapter_files["diffusers"], **SIZE)
    (after,) = generate(pipe, ["x"], [0], **SIZE)
    assert set(pipe.transformer.peft_config) == {"default"}
    assert pipe.transformer.active_adapters() == ["default"]
    assert np.array_equal(before.video, after.video)
    assert _diff(base, before) > 0  # the training adapter was active throughout
    assert all(p.requires_grad for p in lora.values())


def _smooth_clip(frames: int = 17, with_audio: bool = True) -> Clip:
    t, y, x = np.meshgrid(np.arange(frames), np.arange(64), np.arange(96), indexing="ij")
    r = 128 + 100 * np.sin((x + 2 * t) / 12.0)
    g = 128 + 100 * np.cos((y - t) / 10.0)
    b = np.full_like(r, 90.0)
    video = np.stack([r, g, b], axis=-1).astype(np.uint8)
    if not with_audio:
        return Clip(video, 24.0)
    n = int(24000 * frames / 24.0)
    tone = 0.4 * np.sin(2 * np.pi * 440 * np.arange(n) / 24000)
    audio = np.stack([tone, 0.5 * tone]).astype(np.float32)
    return Clip(video, 24.0, audio, 24000)


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    clip = _smooth_clip()
    path = tmp_path / "deep" / "clip.mp4"
    write_clip(path, clip)
    assert [p.name for p in path.parent.iterdir()] == ["clip.mp4"]  # no temp files left
    back = read_clip(path)
    assert back.video.shape == clip.video.shape and back.video.dtype == np.uint8
    assert back.fps == pytest.approx(24.0)
    assert np.abs(back.video.astype(float) - clip.video).mean() < 4.0
    assert back.sample_rate == 24000 and back.audio.shape[0] == 2
    assert abs(back.audio.shape[1] - clip.audio.shape[1]) < 1024
    n = min(back.audio.shape[1], clip.audio.shape[1])
    corr = np.corrcoef(back.audio[0, 2048 : n - 2048], clip.audio[0, 2048 : n - 2048])[0, 1]
    assert corr > 0.95


def test_generated_clip_writes_as_h264_aac(pipe, tmp_path: Path) -> None:
    import av

    (clip,) = generate(pipe, ["x"], [0], **SIZE)
    write_clip(tmp_path / "g.mp4", clip)
    with av.open(str(tmp_path / "g.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert c.streams.audio[0].codec_context.name == "aac"
    assert read_clip(tmp_path / "g.mp4").video.shape == clip.video.shape


def test_video_only_clip(tmp_path: Path) -> None:
    write_clip(tmp_path / "v.mp4", _smooth_clip(9, with_audio=False))
    back = read_clip(tmp_path / "v.mp4")
    assert back.audio is None and back.sample_rate is None and back.video.shape[0] == 9


def test_denoising_is_measured_at_the_evaluated_strength(pipe, adapter_files) -> None:
    """The held-out denoising error applies the adapter at `evaluation.adapter_strength`, as
    the renders do: half strength is another model than full strength."""
    from evaluation.denoising import denoising_errors

    clip = {"c": generate(pipe, ["a red cat"], [0], **SIZE)[0].video}
    adapters = {"adapter": adapter_files["diffusers"]}
    full = denoising_errors(pipe, adapters, clip, ["a red cat"], fps=24.0)["adapter"]
    half = denoising_errors(pipe, adapters, clip, ["a red cat"], fps=24.0, strength=0.5)
    again = denoising_errors(pipe, adapters, clip, ["a red cat"], fps=24.0, strength=1.0)
    assert full == again["adapter"] and full != half["adapter"]
