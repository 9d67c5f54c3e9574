"""`evaluate` end to end on the tiny model: the metrics.json contract, cached reruns, clear
refusals, the report in headless Chromium, and `ltx-lora generate`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from curation.card import load_card
from evaluation.config import EvaluationConfig
from evaluation.evaluate import evaluate
from ltx.identity import model_hash
from ltx.loading import load_pipeline
from ltx.lora import adapter_state_dict, add_lora
from ltx_lora.cli import main
from ltx_lora.config import PACKAGED_CONFIGS
from stagekit.errors import UserError
from stagekit.files import read_json
from stagekit.hashing import sha256_file
from stagekit.workspace import Workspace
from tests.integration.conftest import TINY
from tests.integration.test_curation_report import find_chromium, render

CONTRACT = ("fidelity_base", "fidelity_adapter", "fidelity_lift")
CONTRACT += ("fidelity_lift_ci_low", "fidelity_lift_ci_high")


def small_config() -> EvaluationConfig:
    tree = yaml.safe_load((PACKAGED_CONFIGS / "evaluation" / "default.yaml").read_text())
    tree["stats"]["resamples"] = 500
    return EvaluationConfig.model_validate(tree)


def write_adapter(
    model_path: Path, dest: Path, base_hash: str, seed: int = 0, targets: str = "video_attention"
) -> Path:
    """A nonzero LoRA on the tiny model with the header the trainer writes."""
    pipe = load_pipeline(model_path)
    add_lora(pipe.transformer, 4, 4, 0.0, targets)
    gen = torch.Generator().manual_seed(seed)
    for name, p in pipe.transformer.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.5
    state = {k: v.contiguous() for k, v in adapter_state_dict(pipe.transformer).items()}
    save_file(state, dest, metadata={"base_model": "ltx2-tiny", "base_model_hash": base_hash})
    return dest


@pytest.fixture(scope="module")
def adapter(model_path: Path, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("adapter") / "adapter.safetensors"
    return write_adapter(model_path, dest, model_hash(model_path))


@pytest.fixture(scope="module")
def evaluated(workspace: Workspace, model_path: Path, adapter: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    card = load_card(workspace.card("sample")).model_dump()
    args = (adapter, workspace.reference("sample"))
    kwargs = {"curated_dir": workspace.curated("sample"), "cache_dir": root / "cache"}
    first = evaluate(*args, root / "a", model_path, TINY, small_config(), card, **kwargs)
    return {
        "root": root,
        "first": first,
        "run": lambda out, **kw: evaluate(
            *args, out, model_path, TINY, small_config(), card, **{**kwargs, **kw}
        ),
    }


def test_metrics_json_keeps_the_registry_contract(evaluated) -> None:
    metrics = read_json(evaluated["root"] / "a" / "metrics.json")
    assert metrics["verdict"] in ("pass", "fail") and isinstance(metrics["rule"], str)
    assert all(isinstance(v, float) for v in metrics["scores"].values())
    assert set(CONTRACT) <= set(metrics["scores"])
    s = metrics["scores"]
    assert s["fidelity_lift_ci_low"] <= s["fidelity_lift"] <= s["fidelity_lift_ci_high"]
    assert s["fidelity_lift"] == pytest.approx(s["fidelity_adapter"] - s["fidelity_base"])
    # every score is labelled with its backend and weight hash
    assert set(metrics["score_backends"]) == set(s)
    assert re.fullmatch(
        r"efficientnet-lite0@[0-9a-f]{12}", metrics["score_backends"]["fidelity_base"]
    )
    assert metrics["score_backends"]["motion_speed_base"].startswith("opencv-dis-flow@")
    # what is not configured is reported, not swapped
    assert "prompt_adherence" in metrics["unavailable"] and "fvd_kid" in metrics["unavailable"]
    assert "prompt_adherence_base" not in s and "fvd_adapter" not in s
    # guardrails and the other metrics are present
    for name in ("prior_preservation", "temporal_consistency_adapter", "copy_fraction_adapter"):
        assert name in s
    assert 0.0 <= s["diversity_adapter"] <= 1.0 and 0.0 <= s["dynamic_degree_base"] <= 1.0
    # held-out denoising: both sides on the same noisy reference latents, an interval on the change
    assert s["denoise_error_base"] > 0 and s["denoise_error_adapter"] > 0
    change = s["denoise_error_adapter"] - s["denoise_error_base"]
    assert s["denoise_error_change"] == pytest.approx(change, abs=1e-9)
    assert s["denoise_error_change_ci_low"] <= change <= s["denoise_error_change_ci_high"]
    assert metrics["score_backends"]["denoise_error_base"] == "denoising@sigmas=0.1,0.3,0.5,0.7,0.9"
    assert metrics["verdict"] == ("pass" if not metrics["reasons"] else "fail")
    assert len(metrics["per_sample"]) == 7 * 2  # 6 subject + 1 class prompt, × 2 seeds
    # the interval is over the 6 subject prompts (enough at 95 %), its dual test beside it
    lift = metrics["stats"]["fidelity_lift"]
    assert lift["n_prompts"] == 6 and lift["sufficient"] and lift["method"] == "t"
    assert (s["fidelity_lift_ci_low"] > 0) == (s["fidelity_lift_p"] < 0.025)
    ev = metrics["evidence"]["fidelity_lift"]
    assert ev["ci"] == [s["fidelity_lift_ci_low"], s["fidelity_lift_ci_high"]]
    assert ev["p"] == s["fidelity_lift_p"] and ev["n_prompts"] == 6
    assert set(metrics["evidence"]) == set(metrics["checks"])
    # normalised between the base floor and the reference ceiling
    ceiling, base = s["fidelity_reference_ceiling"], s["fidelity_base"]
    if "fidelity_normalised" in s:
        expected = (s["fidelity_adapter"] - base) / (ceiling - base)
        assert s["fidelity_normalised"] == pytest.approx(expected)
    assert 0.0 <= s["dynamic_degree_reference"] <= 1.0
    assert evaluated["first"]["verdict"] == metrics["verdict"]


def test_cached_rerun_renders_and_extracts_nothing(evaluated, monkeypatch) -> None:
    """Timing is the bench's job (bench/bench_evaluation.py); here: no work is redone."""
    import ltx.loading
    from evaluation import backends, motion

    def refuse(*_a, **_k):
        raise AssertionError("a cached rerun must not render or extract features")

    monkeypatch.setattr(ltx.loading, "load_pipeline", refuse)
    monkeypatch.setattr(backends.EfficientNetBackend, "embed_frames", refuse)
    monkeypatch.setattr(motion, "motion_stats", refuse)
    # a fresh output folder: only the render + feature cache is warm
    again = evaluated["run"](evaluated["root"] / "b")
    assert again["scores"] == evaluated["first"]["scores"] and not again["skipped"]
    assert (evaluated["root"] / "b" / "report.html").is_file()


def test_a_cold_rerun_gives_the_same_scores(evaluated, tmp_path) -> None:
    """Same weights, same scores: an evaluation from an empty cache reproduces every
    feature-based score exactly. Motion is the exception measured here: a few re-encoded adapter
    renders differ in frames 1-2 only (up to 36/255 after decoding, raw frames are identical in
    a fresh process), which moves optical-flow speed by ~3e-6 and smoothness by ~2e-4."""
    again = evaluated["run"](tmp_path / "out", cache_dir=tmp_path / "cold-cache")["scores"]
    first = evaluated["first"]["scores"]
    assert set(again) == set(first)
    exact = {k: v for k, v in first.items() if not k.startswith(("motion_", "dynamic_"))}
    assert {k: again[k] for k in exact} == exact
    for name in set(first) - set(exact):
        assert again[name] == pytest.approx(first[name], abs=1e-3), name


def test_the_champion_is_rendered_as_a_third_side(evaluated, model_path, adapter, tmp_path):
    champion = write_adapter(
        model_path, tmp_path / "champion.safetensors", model_hash(model_path), 1
    )
    result = evaluated["run"](evaluated["root"] / "c", champion=champion)
    s = result["scores"]
    assert s["fidelity_lift_vs_champion"] == pytest.approx(
        s["fidelity_adapter"] - s["fidelity_champion"]
    )
    assert s["fidelity_lift_vs_champion_ci_low"] <= s["fidelity_lift_vs_champion"]
    assert s["fidelity_base"] == evaluated["first"]["scores"]["fidelity_base"]  # same renders
    metrics = read_json(evaluated["root"] / "c" / "metrics.json")
    assert set(metrics["files"]["samples"][0]) == {"base", "adapter", "champion"}
    assert "champion" not in metrics["unavailable"]
    itself = evaluated["run"](evaluated["root"] / "d", champion=adapter)  # no self-comparison
    assert "fidelity_champion" not in itself["scores"]


def test_another_base_models_adapter_is_refused(evaluated, workspace, model_path, tmp_path):
    alien = write_adapter(model_path, tmp_path / "alien.safetensors", "f" * 64)
    with pytest.raises(UserError, match="trained on base model ltx2-tiny"):
        evaluate(
            alien,
            workspace.reference("sample"),
            tmp_path / "out",
            model_path,
            TINY,
            small_config(),
            load_card(workspace.card("sample")).model_dump(),
        )
    assert not (tmp_path / "out").exists()


def test_another_base_models_adapter_is_evaluated_when_allowed(
    evaluated, workspace, model_path, tmp_path
) -> None:
    """evaluation.allow_cross_version=true (an adapter of another LTX version, tested on this
    one): evaluated, and metrics.json says so beside this base's version, which `register`
    records as tested on the registry version."""
    alien = write_adapter(model_path, tmp_path / "alien.safetensors", "f" * 64)
    cfg = small_config().model_copy(update={"allow_cross_version": True})
    evaluate(
        alien,
        workspace.reference("sample"),
        tmp_path / "out",
        model_path,
        TINY,
        cfg,
        load_card(workspace.card("sample")).model_dump(),
        curated_dir=workspace.curated("sample"),
        cache_dir=evaluated["root"] / "cache",
    )
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["cross_version"] is True and metrics["ltx_version"] == TINY.ltx_version
    assert metrics["verdict"] in ("pass", "fail") and "fidelity_lift" in metrics["scores"]
    assert evaluated["first"]["skipped"] is False
    own = read_json(evaluated["root"] / "a" / "metrics.json")
    assert own["cross_version"] is False


def test_no_reference_clips_is_a_clear_error(workspace, model_path, adapter, tmp_path) -> None:
    (tmp_path / "ref").mkdir()
    with pytest.raises(UserError, match="no reference clips"):
        evaluate(
            adapter,
            tmp_path / "ref",
            tmp_path / "out",
            model_path,
            TINY,
            small_config(),
            load_card(workspace.card("sample")).model_dump(),
        )


def test_report_renders_in_chromium_with_videos_and_verdict(evaluated, tmp_path) -> None:
    page = evaluated["root"] / "a" / "report.html"
    browser = find_chromium()
    dom = render(browser, page, tmp_path, "--virtual-time-budget=15000", "--dump-dom").stdout
    total = int(re.search(r'id="videos-total">(\d+)<', dom).group(1))
    assert total == 3 * 14  # base | adapter | reference per prompt and seed
    assert re.search(rf'id="videos-loaded">{total}<', dom), "every video decodes in the browser"
    assert re.search(r'id="videos-failed">0<', dom)
    verdict = evaluated["first"]["verdict"]
    assert re.search(rf'Verdict: <strong class="{verdict}">{verdict}</strong>', dom)
    assert 'id="fidelity-plot"' in dom and "fidelity_lift" in dom and "(95%)" in dom
    assert 'id="rules"' in dom and "one-sided t test, H0: mean ≤ 0" in dom
    assert "unavailable: " in dom


def test_generate_with_a_local_adapter(workspace, adapter, model_path, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    argv = ["--workspace", str(workspace.root), "generate", "model=tiny", "--adapter", str(adapter)]
    assert main([*argv, "--prompt", "zorblat mascot waving", "--seed", "3", "--out", str(out)]) == 0
    from ltx.sampling import read_clip

    clip = read_clip(out)
    assert clip.video.shape == (17, 64, 64, 3) and clip.audio is not None
    alien = write_adapter(model_path, tmp_path / "alien.safetensors", "0" * 64)
    argv[-1] = str(alien)
    assert main([*argv, "--prompt", "x", "--out", str(tmp_path / "no.mp4")]) == 1
    assert "not on this one" in capsys.readouterr().err
    assert not (tmp_path / "no.mp4").exists()


def test_generate_with_a_registered_adapter(workspace, adapter, model_path, tmp_path):
    """Register the adapter in a fresh MLflow, then render it by alias: pulled, verified, used."""
    from safetensors.torch import load_file

    from ltx.lora_keys import to_comfyui
    from registry.register import register_adapter
    from registry.store import ensure_schema, local_tracking_uri, open_client

    train = tmp_path / "train"
    (train / "adapter").mkdir(parents=True)
    shutil.copy(adapter, train / "adapter" / "adapter.safetensors")
    save_file(to_comfyui(load_file(adapter)), train / "adapter" / "comfyui.safetensors")
    lineage = {
        "dataset_hash": "d" * 32,
        "base_model": "ltx2-tiny",
        "base_model_hash": model_hash(model_path),
        "config_hash": "c" * 64,
        "git_commit": "0" * 40,
        "ltx_version": "2.0",
    }
    record = {"run_name": "eval-test", "lineage": lineage, "params": {"rank": 4}, "final": {}}
    (train / "train.json").write_text(json.dumps(record))
    uri = local_tracking_uri(tmp_path / ".mlflow")
    ensure_schema(uri)
    card = load_card(workspace.card("sample")).model_dump()
    name = f"{card['client']}.{card['adapter']}"
    client = open_client(uri, tmp_path / ".mlflow" / "artifacts")
    register_adapter(
        client, name=name, train_dir=train, eval_dir=None, experiment="t", dataset_card=card
    )
    out = tmp_path / "registered.mp4"
    argv = ["--workspace", str(workspace.root), "generate", "model=tiny", "--tracking-uri", uri]
    argv += ["--adapter", f"{name}@candidate", "--prompt", "zorblat mascot", "--out", str(out)]
    assert main(argv) == 0
    pulled = workspace.root / ".ltx-lora" / "adapters" / name / "candidate"
    assert sha256_file(next(pulled.glob("*.safetensors"))) == sha256_file(adapter)
    from ltx.sampling import read_clip

    assert read_clip(out).video.shape == (17, 64, 64, 3)
