"""Gate policy, prompt suites and reference discovery: verdicts with reasons, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from evaluation.config import EvaluationConfig, GateConfig
from evaluation.gate import judge
from evaluation.suite import curated_clips, load_suite, reference_clips
from ltx_lora.config import PACKAGED_CONFIGS
from stagekit.errors import ConfigError, UserError

CARD = {"trigger": "zorblat", "class_noun": "mascot", "client": "acme", "adapter": "m"}
GOOD = {
    "fidelity_lift_ci_low": 0.02,
    "temporal_consistency_base": 0.95,
    "temporal_consistency_adapter": 0.93,
    "prior_preservation": 0.8,
    "copy_fraction_adapter": 0.0,
}


def default_config() -> EvaluationConfig:
    return EvaluationConfig.model_validate(
        yaml.safe_load((PACKAGED_CONFIGS / "evaluation" / "default.yaml").read_text())
    )


def test_all_rules_hold_is_a_pass() -> None:
    v = judge(GOOD, GateConfig())
    assert v.verdict == "pass" and v.reasons == []
    assert set(v.checks) == {
        "fidelity_lift",
        "temporal_consistency",
        "prior_preservation",
        "no_copying",
    }
    assert "CI lower bound > 0" in v.rule


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"fidelity_lift_ci_low": -0.01}, "fidelity lift not shown"),
        ({"temporal_consistency_adapter": 0.85}, "temporal consistency fell"),
        ({"prior_preservation": 0.2}, "prior preservation 0.2000 is below"),
        ({"copy_fraction_adapter": 0.5}, "50.00% of adapter renders copy"),
    ],
)
def test_each_broken_rule_fails_with_its_reason(change: dict, reason: str) -> None:
    v = judge({**GOOD, **change}, GateConfig())
    assert v.verdict == "fail" and len(v.reasons) == 1 and reason in v.reasons[0]


def test_missing_guardrails_are_skipped_but_a_missing_lift_fails() -> None:
    v = judge({"fidelity_lift_ci_low": 0.1}, GateConfig())
    assert v.verdict == "pass" and set(v.checks) == {"fidelity_lift"}
    assert judge({}, GateConfig()).verdict == "fail"


def test_beating_the_champion_is_a_rule_only_when_configured() -> None:
    scores = {**GOOD, "fidelity_lift_vs_champion_ci_low": -0.01}
    assert judge(scores, GateConfig()).verdict == "pass"
    v = judge(scores, GateConfig(min_lift_vs_champion_ci_low=0.0))
    assert v.verdict == "fail" and "not better than the champion" in v.reasons[0]
    # no champion registered: the rule has nothing to judge
    assert "beats_champion" not in judge(GOOD, GateConfig(min_lift_vs_champion_ci_low=0.0)).checks


def test_a_confidently_worse_heldout_denoising_error_fails() -> None:
    worse = {"denoise_error_base": 1.0, "denoise_error_adapter": 3.0}
    v = judge({**GOOD, **worse, "denoise_error_change_ci_low": 1.5}, GateConfig())
    assert v.verdict == "fail" and len(v.reasons) == 1
    assert v.reasons[0].startswith("held-out denoising error rose from 1.0000 to 3.0000")
    # better, or not confidently worse: the rule holds
    for low in (-0.4, 0.0):
        v = judge({**GOOD, "denoise_error_change_ci_low": low}, GateConfig())
        assert v.verdict == "pass" and v.checks["denoising"]
    # report only
    v = judge(
        {**GOOD, "denoise_error_change_ci_low": 1.5},
        GateConfig(max_denoise_error_change_ci_low=None),
    )
    assert v.verdict == "pass" and "denoising" not in v.checks


def test_default_config_and_unknown_keys() -> None:
    cfg = default_config()
    assert cfg.prompts.prior_preservation and cfg.features.image == "efficientnet-lite0"
    with pytest.raises(ValueError, match="extra"):
        EvaluationConfig.model_validate({**cfg.model_dump(), "gate": {"min_lift": 1}})


def test_suite_from_config_and_dataset_file(tmp_path: Path) -> None:
    cfg = default_config()
    suite = load_suite(cfg, CARD, tmp_path / "missing.yaml")
    assert suite.source == "config" and suite.seeds == cfg.seeds
    assert suite.group("in_distribution")[0].text.startswith("zorblat mascot")
    assert "zorblat" not in suite.group("prior_preservation")[0].text
    own = tmp_path / "evaluation.yaml"
    own.write_text(
        yaml.safe_dump(
            {"prompts": {"in_distribution": ["{trigger} {class_noun} waving"]}, "seeds": [5]}
        )
    )
    suite = load_suite(cfg, CARD, own)
    assert [p.text for p in suite.prompts] == ["zorblat mascot waving"]
    assert suite.seeds == [5] and suite.source == str(own)


def test_bad_suite_files_are_clear_errors(tmp_path: Path) -> None:
    cfg = default_config()
    bad = tmp_path / "evaluation.yaml"
    bad.write_text("prompt: [x]\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_suite(cfg, CARD, bad)
    bad.write_text("prompts: {in_distribution: ['{trigger} {colour}']}\n")
    with pytest.raises(ConfigError, match="colour"):
        load_suite(cfg, CARD, bad)
    bad.write_text("prompts: {in_distribution: []}\n")
    with pytest.raises(ConfigError, match=r"evaluation\.yaml"):
        load_suite(cfg, CARD, bad)


def test_references_are_the_reference_folder_plus_held_out_clips(tmp_path: Path) -> None:
    ref, cur = tmp_path / "reference", tmp_path / "curated"
    ref.mkdir()
    cur.mkdir()
    with pytest.raises(UserError, match="no reference clips"):
        reference_clips(ref, cur)
    (ref / "a.mp4").write_bytes(b"")
    (ref / "notes.txt").write_text("x")
    rows = [
        {"path": "clips/t.mp4", "split": "train"},
        {"path": "clips/v.mp4", "split": "validation"},
    ]
    (cur / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert reference_clips(ref, cur) == [ref / "a.mp4", cur / "clips/v.mp4"]
    assert curated_clips(cur, "train") == [cur / "clips/t.mp4"]
    assert curated_clips(None, "train") == []


def _lift_stats(prompts: int, confidence: float = 0.95) -> dict:
    from evaluation.stats import paired_summary

    diffs = {(f"p{p}", s): 0.1 + 0.01 * p + 0.005 * s for p in range(prompts) for s in (0, 1)}
    return {"fidelity_lift": paired_summary(diffs, confidence).as_dict()}


def test_a_suite_of_two_prompts_is_refused_for_a_95_percent_gate() -> None:
    stats = _lift_stats(2)
    scores = {**GOOD, "fidelity_lift_ci_low": stats["fidelity_lift"]["ci_low"]}
    v = judge(scores, GateConfig(min_fidelity_lift_ci_low=-10.0), stats)
    assert v.verdict == "fail" and len(v.reasons) == 1
    assert v.reasons[0].startswith("only 2 prompts: a 95% interval needs at least 6")
    # the same lift over six prompts passes, and at 90 % five are enough
    shown = {**GOOD, "fidelity_lift_ci_low": 0.05}
    assert judge(shown, GateConfig(), _lift_stats(6)).verdict == "pass"
    assert judge(shown, GateConfig(), _lift_stats(5, 0.9)).verdict == "pass"
    v = judge(shown, GateConfig(), _lift_stats(4, 0.9))
    assert v.verdict == "fail" and "a 90% interval needs at least 5" in v.reasons[0]


def test_each_rule_carries_its_evidence_and_the_test_agrees_with_the_interval() -> None:
    stats = _lift_stats(8)
    lift = stats["fidelity_lift"]
    v = judge({**GOOD, "fidelity_lift_ci_low": lift["ci_low"]}, GateConfig(), stats)
    ev = v.evidence["fidelity_lift"]
    assert v.verdict == "pass" and ev["mean"] == pytest.approx(0.1375)
    assert ev["ci"] == [lift["ci_low"], lift["ci_high"]] and ev["n_prompts"] == 8
    assert ev["effect_dz"] > 5 and ev["p"] < 0.025 and "H0: mean ≤ 0" in ev["test"]
    assert v.evidence["temporal_consistency"] == {"base": 0.95, "adapter": 0.93}


@pytest.mark.parametrize(
    ("reference", "base", "adapter", "held"),
    [
        (1.0, 1.0, 0.0, False),  # static renders against moving references: fails
        (1.0, 1.0, 0.75, True),  # within the allowed drop (0.25)
        (0.5, 1.0, 0.25, True),  # floor min(base, references) - 0.25
        (1.0, 0.0, 0.0, True),  # the base does not move either: not the adapter's loss
        (0.0, 1.0, 0.0, None),  # references static: the rule does not apply
    ],
)
def test_an_adapter_that_loses_the_references_motion_fails(
    reference: float, base: float, adapter: float, held: bool | None
) -> None:
    scores = {
        **GOOD,
        "dynamic_degree_reference": reference,
        "dynamic_degree_base": base,
        "dynamic_degree_adapter": adapter,
    }
    v = judge(scores, GateConfig())
    assert v.checks.get("motion_kept") is held
    if held is False:
        assert v.reasons == [
            "the adapter's renders lost their motion: 0% of them move, against 100% of the "
            "base's and 100% of the reference clips (allowed drop 0.25)"
        ]
    assert "motion_kept" not in judge(scores, GateConfig(max_dynamic_degree_drop=None)).checks
