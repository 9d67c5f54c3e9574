"""The evaluation knows the adapter's training mode: where it is read, what each mode is
conditioned on (from held-out reference clips), and which gate rules apply to it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from evaluation.conditioning import is_control, plan_conditioning, write_media
from evaluation.config import GateConfig
from evaluation.gate import judge
from evaluation.modes import Mode, adapter_mode
from evaluation.suite import reference_clips
from ltx.controls import edge_frames
from ltx.sampling import Clip, write_clip
from stagekit.errors import UserError


def adapter(run: Path, header: dict[str, str] | None = None, params: dict | None = None) -> Path:
    """`<run>/adapter/adapter.safetensors` (+ `<run>/train.json` with `params`), as train writes."""
    path = run / "adapter" / "adapter.safetensors"
    path.parent.mkdir(parents=True)
    save_file({"w": torch.zeros(1)}, path, metadata=header or {})
    if params is not None:
        (run / "train.json").write_text(json.dumps({"params": params}))
    return path


def test_the_mode_is_read_from_train_json_and_overridden_by_config(tmp_path: Path) -> None:
    path = adapter(tmp_path, params={"strategy": "keyframes", "rank": 4})
    assert adapter_mode(path) == Mode("keyframes", "train.json")
    assert adapter_mode(path, "text_to_video") == Mode("text_to_video", "evaluation.mode")
    assert adapter_mode(path).conditioned and not adapter_mode(path).has_audio


def test_the_header_wins_and_carries_the_ic_lora_scale(tmp_path: Path) -> None:
    header = {"strategy": "reference_video", "reference_downscale_factor": "2"}
    path = adapter(tmp_path, header, params={"strategy": "audio_video"})
    assert adapter_mode(path) == Mode("reference_video", "adapter header", 2)


def test_audio_video_without_audio_modules_is_evaluated_as_video(tmp_path: Path) -> None:
    """A run whose cache had no audio trains no audio module (trainer: trained_modality): its
    adapter is judged on video; one with an audio-writing key keeps the audio rule."""
    path = adapter(tmp_path / "video", params={"strategy": "audio_video"})
    mode = adapter_mode(path)
    assert mode.name == "text_to_video" and "without audio modules" in mode.source
    assert adapter_mode(path, "audio_video").name == "audio_video"  # an override is obeyed
    key = "transformer.transformer_blocks.0.audio_attn1.to_q.lora_A.weight"
    run = tmp_path / "both" / "adapter"
    run.mkdir(parents=True)
    save_file({key: torch.zeros(1)}, run / "adapter.safetensors")
    (run.parent / "train.json").write_text(json.dumps({"params": {"strategy": "audio_video"}}))
    assert adapter_mode(run / "adapter.safetensors") == Mode("audio_video", "train.json")


def test_an_adapter_that_says_nothing_is_text_to_video(tmp_path: Path) -> None:
    assert adapter_mode(adapter(tmp_path)) == Mode("text_to_video", "default")


def test_a_mode_not_yet_evaluated_is_refused_not_scored_wrongly(tmp_path, monkeypatch) -> None:
    from evaluation import modes

    path = adapter(
        tmp_path, params={"strategy": "multi_reference", "reference_downscale_factor": 2}
    )
    assert adapter_mode(path) == Mode("multi_reference", "train.json", 2)
    monkeypatch.setitem(modes.NOT_YET, "multi_reference", "its sheet is not rendered")
    with pytest.raises(UserError, match="multi_reference are not yet evaluated"):
        adapter_mode(path)
    assert adapter_mode(path, "text_to_video").name == "text_to_video"  # knowingly


def test_an_unknown_mode_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"does not know: set evaluation\.mode to one of"):
        adapter_mode(adapter(tmp_path, {"strategy": "depth_control"}))


def write(path: Path, frames: int, colour: tuple[int, int, int], size: int = 96) -> Path:
    """A clip whose frame i is `colour` with a white bar at column 4*i (frames tell apart)."""
    video = np.tile(np.array(colour, np.uint8), (frames, size, size, 1))
    for i in range(frames):
        video[i, :, 4 * i : 4 * i + 8] = 255
    write_clip(path, Clip(video, 24.0))
    return path


@pytest.fixture
def refs(tmp_path: Path) -> list[Path]:
    clips = [write(tmp_path / "a.mp4", 17, (200, 40, 40)), write(tmp_path / "b.mp4", 5, (0, 0, 0))]
    return [*clips, write(tmp_path / "c.mp4", 20, (40, 40, 200))]


def test_image_to_video_conditions_each_prompt_on_a_held_out_first_frame(refs) -> None:
    plan = plan_conditioning(Mode("image_to_video", "t"), ["p0", "p1", "p2"], refs, (64, 64, 17))
    # b.mp4 is shorter than the render: skipped; prompts take the usable clips in turn
    assert [plan[p].source.name for p in ("p0", "p1", "p2")] == ["a.mp4", "c.mp4", "a.mp4"]
    ((image, index),) = plan["p0"].images
    assert image.shape == (64, 64, 3) and index == 0
    assert abs(int(image[40, 40, 0]) - 200) < 12  # the clip's colour, centre-cropped and resized
    kwargs = plan["p0"].generate_kwargs()
    assert list(kwargs) == ["conditions"] and kwargs["conditions"][0][1] == 0
    assert plan["p0"].key() == plan["p2"].key() != plan["p1"].key()


def test_keyframes_condition_on_the_first_and_last_frames(refs) -> None:
    plan = plan_conditioning(Mode("keyframes", "t"), ["p"], refs, (64, 64, 17))
    (first, i0), (last, i1) = plan["p"].images
    assert (i0, i1) == (0, -1)
    # the bar moves 4 px a frame in the 96-px clip: frame 16's bar is far right of frame 0's
    assert first[:, :8].mean() > 200 and last[:, :8].mean() < 150


def test_an_ic_lora_gets_edges_or_its_paired_control(tmp_path: Path, refs) -> None:
    mode = Mode("reference_video", "t", reference_downscale_factor=2)
    plan = plan_conditioning(mode, ["p"], refs, (64, 64, 17))
    video, factor = plan["p"].generate_kwargs()["reference"]
    assert video.shape == (17, 64, 64, 3) and factor == 2 and plan["p"].kind == "Sobel edges"
    write(tmp_path / "a_ref.mp4", 17, (0, 255, 0))
    paired = plan_conditioning(mode, ["p"], refs, (64, 64, 17))["p"]
    assert paired.kind == "paired control a_ref.mp4" and paired.reference[0, 40, 40, 1] > 200
    edges = plan_conditioning(mode, ["p"], refs, (64, 64, 17), control="edges")["p"]
    assert edges.kind == "Sobel edges"
    # a control is not a clip of the subject
    assert is_control(tmp_path / "a_ref.mp4") and not is_control(tmp_path / "a.mp4")
    assert tmp_path / "a_ref.mp4" not in reference_clips(tmp_path, None)


def test_multi_reference_conditions_on_the_held_out_sheet_in_order(tmp_path: Path, refs) -> None:
    import cv2

    from evaluation.conditioning import reference_sheet

    write(tmp_path / "c_ref1.mp4", 9, (0, 255, 0))
    cv2.imwrite(str(tmp_path / "c_ref0.png"), np.full((48, 80, 3), (255, 0, 0), np.uint8))  # BGR
    write(tmp_path / "c_ref.mp4", 30, (255, 255, 0))
    (tmp_path / "c_ref2.txt").write_text("not a reference")
    sheet = reference_sheet(tmp_path / "c.mp4")
    assert [p.name for p in sheet] == ["c_ref.mp4", "c_ref0.png", "c_ref1.mp4"]
    mode = Mode("multi_reference", "t", reference_downscale_factor=2)
    plan = plan_conditioning(mode, ["p0", "p1"], refs, (64, 64, 17))
    assert {c.source.name for c in plan.values()} == {"c.mp4"}  # the one clip with a sheet
    videos, factor = plan["p0"].generate_kwargs()["reference"]
    assert factor == 2 and [v.shape for v in videos] == [
        (17, 64, 64, 3),  # a longer video: the render's frames
        (1, 64, 64, 3),  # a still: one frame, centre-cropped to the aspect
        (9, 64, 64, 3),  # a shorter one: its own frames
    ]
    assert videos[1][0, 32, 32, 2] > 240 and plan["p0"].kind == "reference sheet of 3"
    files = write_media(tmp_path / "out", "condition-00", plan["p0"])
    assert files == ["condition-00-ref0.mp4", "condition-00-ref1.png", "condition-00-ref2.mp4"]
    assert all((tmp_path / "out" / f).is_file() for f in files)


def test_multi_reference_without_a_sheet_is_a_clear_error(refs) -> None:
    with pytest.raises(UserError, match="no reference clip has one"):
        plan_conditioning(Mode("multi_reference", "t"), ["p"], refs, (64, 64, 17))


def test_edges_are_the_sobel_magnitude() -> None:
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    frames[:, :, 4:] = 255
    edges = edge_frames(frames)
    assert edges.shape == (1, 8, 8, 3) and edges[0, :, 3:5, 0].min() == 255
    assert edges[0, :, :2, 0].max() == 0 and edges[0, :, 6:, 0].max() == 0


def test_text_only_modes_have_no_conditioning(refs) -> None:
    for name in ("text_to_video", "audio_video", "text_to_audio"):
        assert plan_conditioning(Mode(name, "t"), ["p"], refs, (64, 64, 17)) == {}


def test_no_clip_long_enough_is_a_clear_error(refs) -> None:
    with pytest.raises(UserError, match="none has 33 frames"):
        plan_conditioning(Mode("keyframes", "t"), ["p"], refs, (64, 64, 33))


VIDEO_OK = {
    "fidelity_lift_ci_low": 0.02,
    "temporal_consistency_base": 0.95,
    "temporal_consistency_adapter": 0.95,
}
AUDIO = {"audio_mcd_lift": 3.0, "audio_mcd_lift_ci_low": 1.0, "audio_mcd_lift_ci_high": 5.0}
AUDIO_STATS = {
    "audio_mcd_lift": {
        "mean": 3.0, "ci_low": 1.0, "ci_high": 5.0, "confidence": 0.95, "method": "t",
        "effect_dz": 1.2, "bound": 0.0, "p_value": 0.004, "n_prompts": 6, "min_prompts": 6,
        "sufficient": True,
    }
}  # fmt: skip


def test_the_audio_rule_applies_only_to_modes_with_audio() -> None:
    gate = GateConfig()
    assert "audio_lift" not in judge(VIDEO_OK, gate, {}, "text_to_video").checks
    v = judge({**VIDEO_OK, **AUDIO}, gate, AUDIO_STATS, "audio_video")
    assert v.verdict == "pass" and v.checks["audio_lift"] and v.checks["fidelity_lift"]
    assert v.evidence["audio_lift"]["ci"] == [1.0, 5.0]
    worse = {**VIDEO_OK, **AUDIO, "audio_mcd_lift_ci_low": -0.5}
    v = judge(worse, gate, AUDIO_STATS, "audio_video")
    assert v.verdict == "fail" and v.reasons[0].startswith("audio lift not shown")
    # asked for, not measured (no reference audio): the audio mode cannot pass
    assert judge(VIDEO_OK, gate, {}, "audio_video").checks["audio_lift"] is False
    # null turns it into a report
    off = GateConfig(min_audio_mcd_lift_ci_low=None)
    assert "audio_lift" not in judge(VIDEO_OK, off, {}, "audio_video").checks


def test_text_to_audio_is_judged_on_its_audio_not_the_video_lift() -> None:
    no_video_lift = {**VIDEO_OK, "fidelity_lift_ci_low": -0.01, **AUDIO}
    v = judge(no_video_lift, GateConfig(), AUDIO_STATS, "text_to_audio")
    assert v.verdict == "pass" and "fidelity_lift" not in v.checks and v.checks["audio_lift"]
    assert judge(no_video_lift, GateConfig(), AUDIO_STATS, "audio_video").verdict == "fail"


def test_image_to_video_denoising_keeps_the_first_latent_frame_clean() -> None:
    """The layout LTX2ImageToVideoPipeline samples and the trainer's image_to_video trains:
    frame 0 of x_t is the clip's own clean latent frame, its tokens at noise level 0."""
    from evaluation.denoising import SIGMAS, first_frame_clean

    clean = torch.randn(4, 3, 2, 5)  # [C, F, H, W]
    sigmas = torch.tensor(SIGMAS)
    x_t = torch.randn(len(SIGMAS), 4, 3, 2, 5)
    levels = first_frame_clean(x_t, clean, sigmas)
    assert torch.equal(x_t[:, :, 0], clean[None, :, 0].expand(len(SIGMAS), -1, -1, -1))
    assert levels.shape == (len(SIGMAS), 3 * 2 * 5)
    assert levels[:, :10].abs().max() == 0  # frame 0's H*W tokens, frame-major
    assert torch.equal(levels[:, 10:], sigmas[:, None].expand(-1, 20))


def test_a_still_reference_reads_after_decord_is_loaded(tmp_path: Path) -> None:
    """decord (the frame reader) loaded before OpenCV breaks OpenCV's PNG decoder in that
    process ("libpng error: bad parameters to zlib"): a sheet's still must read regardless.
    A fresh interpreter, so the import order is the one a run has."""
    import subprocess
    import sys

    pytest.importorskip("decord")
    from PIL import Image

    Image.fromarray(np.full((48, 80, 3), (255, 0, 0), np.uint8)).save(tmp_path / "c_ref0.png")
    code = (
        "import decord, sys; from pathlib import Path;"
        "from evaluation.conditioning import _sheet_item;"
        "f = _sheet_item(Path(sys.argv[1]), (64, 64, 17)); print(f.shape, f[0, 32, 32].tolist())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "c_ref0.png")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(1, 64, 64, 3) [255, 0, 0]"
