"""`evaluate` per training mode on the tiny model: the mode read from the run's train.json (or
overridden), base and adapter rendered with the same held-out conditioning through
`ltx.sampling.generate`, the conditioning in report.html, audio scores for audio modes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from curation.card import load_card
from evaluation.evaluate import evaluate
from ltx.identity import model_hash
from ltx.sampling import Clip, read_clip, write_clip
from stagekit.files import read_json
from tests.integration.conftest import TINY
from tests.integration.test_evaluation import small_config, write_adapter


def run_dir(model_path: Path, root: Path, params: dict | None) -> Path:
    """A train output folder: adapter/adapter.safetensors and, with `params`, train.json; an
    audio mode's adapter sits on every attention module, audio included, as its run's would."""
    (root / "adapter").mkdir(parents=True)
    audio = (params or {}).get("strategy") in ("audio_video", "text_to_audio")
    dest = root / "adapter" / "adapter.safetensors"
    path = write_adapter(
        model_path, dest, model_hash(model_path), targets="all" if audio else "video_attention"
    )
    if params is not None:
        (root / "train.json").write_text(json.dumps({"params": params}))
    return path


@pytest.fixture(scope="module")
def run(workspace, model_path, tmp_path_factory):
    """evaluate(adapter trained in `strategy`, **config overrides) → (metrics, out folder)."""
    root = tmp_path_factory.mktemp("modes")
    card = load_card(workspace.card("sample")).model_dump()

    def go(name: str, strategy: str | None, reference_dir=None, **update) -> tuple[dict, Path]:
        adapter = run_dir(model_path, root / name, {"strategy": strategy} if strategy else None)
        cfg = small_config().model_copy(update={"seeds": [0], **update})
        out = root / name / "eval"
        evaluate(
            adapter, reference_dir or workspace.reference("sample"), out, model_path, TINY, cfg,
            card, curated_dir=workspace.curated("sample"), cache_dir=root / "cache",
        )  # fmt: skip
        return read_json(out / "metrics.json"), out

    return go


def test_image_to_video_renders_both_sides_from_a_held_out_first_frame(run) -> None:
    metrics, out = run("i2v", "image_to_video")
    mode = metrics["mode"]
    assert (mode["name"], mode["source"]) == ("image_to_video", "train.json")
    refs = {Path(r).name.split("-", 2)[-1] for r in metrics["files"]["references"]}
    assert {c["clip"] for c in mode["conditioning"].values()} <= refs
    assert all(c["kind"] == "first frame" for c in mode["conditioning"].values())
    conditions = metrics["files"]["conditions"]
    assert len(conditions) == len(metrics["per_sample"]) == 7
    for files in conditions:
        (png,) = files
        assert png.endswith("-first.png") and (out / png).is_file()
    # held-out denoising as image-to-video is trained: the first latent frame clean
    assert "denoising" in metrics["checks"] and "audio" in metrics["unavailable"]
    label = metrics["score_backends"]["denoise_error_change"]
    assert label.endswith(",first-frame-clean")
    page = (out / "report.html").read_text()
    assert page.count('<img class="condition"') == 7 and "Mode: <strong>image_to_video" in page
    assert "conditioning | base | adapter" in page
    # each row's reference is the clip its conditioning came from
    clip = mode["conditioning"][metrics["per_sample"][0]["prompt"]]["clip"]
    assert "reference reference-" in page and re.search(rf"reference-\d+-{re.escape(clip)}", page)
    # the same prompt and seed as text-to-video renders another clip: the conditioning is used
    t2v, t2v_out = run("t2v", "image_to_video", mode="text_to_video")
    assert t2v["mode"]["source"] == "evaluation.mode" and t2v["files"]["conditions"] == [[]] * 7
    first = read_clip(out / metrics["files"]["samples"][0]["base"]).video
    plain = read_clip(t2v_out / t2v["files"]["samples"][0]["base"]).video
    assert first.shape == plain.shape and np.abs(first.astype(int) - plain).mean() > 1.0


def test_the_conditioned_report_decodes_in_chromium(run, tmp_path) -> None:
    """Every conditioning image and every video of the image-to-video report loads in a real
    browser, beside the mode line."""
    from tests.integration.test_curation_report import find_chromium, render

    _, out = run("i2v-browser", "image_to_video")
    flags = ("--virtual-time-budget=15000", "--dump-dom")
    dom = render(find_chromium(), out / "report.html", tmp_path, *flags).stdout
    total = int(re.search(r'id="videos-total">(\d+)<', dom).group(1))
    assert total == 3 * 7 and re.search(rf'id="videos-loaded">{total}<', dom)
    assert re.search(r'id="images-total">7<', dom) and re.search(r'id="images-loaded">7<', dom)
    assert "Mode: <strong>image_to_video</strong>" in dom


def test_keyframes_and_an_ic_lora_show_their_conditioning(run) -> None:
    metrics, _ = run("kf", None, mode="keyframes")
    assert metrics["mode"]["source"] == "evaluation.mode"
    # held-out denoising with each clip's own first and last frames, as the strategy trains
    assert "denoising" in metrics["checks"] and "denoising" not in metrics["unavailable"]
    label = metrics["score_backends"]["denoise_error_change"]
    assert label.endswith(",first-last-keyframes")
    assert all(len(files) == 2 for files in metrics["files"]["conditions"])
    assert metrics["files"]["conditions"][0][1].endswith("-last.png")
    ic, ic_out = run("ic", "reference_video")
    (video,) = ic["files"]["conditions"][0]
    assert video.endswith(".mp4") and read_clip(ic_out / video).video.shape == (17, 64, 64, 3)
    page = (ic_out / "report.html").read_text()
    total = int(re.search(r'id="videos-total">(\d+)<', page).group(1))
    assert total == 7 * 3 + 7  # base | adapter | reference, and the reference control
    assert "conditioning: Sobel edges of" in page
    assert ic["score_backends"]["denoise_error_change"].endswith(",reference-appended")
    assert "denoising" in ic["checks"]


def test_an_audio_video_adapter_is_scored_on_its_sound(run) -> None:
    metrics, _ = run("av", "audio_video")
    assert (metrics["mode"]["name"], metrics["mode"]["source"]) == ("audio_video", "train.json")
    s = metrics["scores"]
    assert s["audio_mcd_base"] > 0 and s["audio_mcd_adapter"] > 0
    assert s["audio_mcd_lift"] == pytest.approx(s["audio_mcd_base"] - s["audio_mcd_adapter"])
    assert s["audio_latent_fd_base"] >= 0 and s["audio_latent_fd_adapter"] >= 0
    assert metrics["stats"]["audio_mcd_lift"]["n_prompts"] == 6
    assert "audio_lift" in metrics["checks"] and "audio" not in metrics["unavailable"]
    assert metrics["evidence"]["audio_lift"]["n_prompts"] == 6
    assert "denoising" in metrics["checks"]  # unconditioned: the velocity check applies


def test_a_multi_reference_adapter_is_rendered_with_held_out_sheets(run, workspace, tmp_path):
    """References with their sheets (`<clip>_ref0.mp4`, `<clip>_ref1.png` beside them, as
    curation writes them): every prompt is rendered with one clip's whole sheet."""
    import cv2

    refs = tmp_path / "reference"
    shutil.copytree(workspace.reference("sample"), refs)
    for clip in sorted(refs.glob("*.mp4"))[:2]:
        video = read_clip(clip).video
        write_clip(refs / f"{clip.stem}_ref0.mp4", Clip(255 - video[:9], 24.0))
        cv2.imwrite(str(refs / f"{clip.stem}_ref1.png"), video[0, ..., ::-1])
    metrics, out = run("multi", "multi_reference", reference_dir=refs)
    assert metrics["mode"]["name"] == "multi_reference"
    kinds = {c["kind"] for c in metrics["mode"]["conditioning"].values()}
    assert kinds == {"reference sheet of 2"}
    # a sheet conditions renders; it is not a reference clip of the subject
    assert not any("_ref" in Path(r).name for r in metrics["files"]["references"])
    for files in metrics["files"]["conditions"]:
        assert [f.rsplit("-", 1)[-1] for f in files] == ["ref0.mp4", "ref1.png"]
        assert all((out / f).is_file() for f in files)
    # denoised with their sheets appended: the clips that have one
    assert "denoising" in metrics["checks"]
    assert metrics["score_backends"]["denoise_error_change"].endswith(",sheet-appended")


def test_the_sample_references_have_the_frames_and_sound_the_modes_need(workspace) -> None:
    clips = sorted(workspace.reference("sample").glob("*.mp4"))
    assert clips and all(len(read_clip(p).video) >= 17 for p in clips)
    assert all(read_clip(p).audio is not None for p in clips)
