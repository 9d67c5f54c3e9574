"""The paired statistics: intervals on per-prompt means, their dual test, the minimum suite,
determinism, and the signed-rank check pointing the right way. (Coverage:
test_evaluation_coverage.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.stats import group_by_prompt, min_prompts, paired_summary


def _simulate(rng: np.random.Generator, effect: float, prompts: int, seeds: int) -> dict:
    """Per-prompt true effects around `effect` plus seed noise: the design an evaluation has."""
    per_prompt = rng.normal(effect, 0.05, prompts)
    return {
        (f"p{p}", s): per_prompt[p] + rng.normal(0.0, 0.05)
        for p in range(prompts)
        for s in range(seeds)
    }


def test_minimum_prompts_per_confidence() -> None:
    # the sign test's smallest two-sided p with n prompts is 2 / 2^n
    assert [min_prompts(c) for c in (0.9, 0.95, 0.99)] == [5, 6, 8]
    for c in (0.8, 0.9, 0.95, 0.99):
        n = min_prompts(c)
        assert 2 / 2**n <= 1 - c < 2 / 2 ** (n - 1)


def test_interval_excludes_zero_for_a_clear_effect_and_includes_it_for_none() -> None:
    rng = np.random.default_rng(2)
    clear = paired_summary(_simulate(rng, 0.2, 10, 3))
    assert clear.ci_low > 0 and clear.p_value < 0.001 and clear.wilcoxon_p < 0.01
    assert clear.effect_dz > 1 and clear.rank_biserial == 1.0 and clear.sufficient
    null = paired_summary(_simulate(rng, 0.0, 10, 3))
    assert null.ci_low < 0 < null.ci_high and null.p_value > 0.025


@pytest.mark.parametrize("method", ["t", "bootstrap-t"])
@pytest.mark.parametrize("bound", [0.0, 0.05, 0.09, 0.12])
def test_the_test_is_the_interval_s_dual(method: str, bound: float) -> None:
    """Lower end above the bound ⇔ one-sided p below (1 − confidence) / 2: never both ways."""
    for seed in range(20):
        s = paired_summary(
            _simulate(np.random.default_rng(seed), 0.1, 8, 2), bound=bound, method=method
        )
        assert (s.ci_low > bound) == (s.p_value < 0.025), (seed, s)


def test_hand_computed_t_interval() -> None:
    # per-prompt means 0.1, 0.2, 0.3, 0.4, 0.5, 0.6 (2 seeds each): mean 0.35, sd 0.18708,
    # t(0.975, 5) = 2.5706 → half-width 0.19633
    diffs = {(f"p{i}", s): 0.1 * (i + 1) + (0.01 if s else -0.01) for i in range(6) for s in (0, 1)}
    s = paired_summary(diffs)
    assert s.mean == pytest.approx(0.35)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.35 - 0.19633, 0.35 + 0.19633), abs=1e-5)
    assert s.effect_dz == pytest.approx(0.35 / 0.187083, rel=1e-5)
    assert s.n_prompts == 6 and s.min_prompts == 6 and s.sufficient


def test_deterministic_and_too_few_prompts_say_so() -> None:
    diffs = _simulate(np.random.default_rng(3), 0.1, 5, 2)
    for method in ("t", "bootstrap-t"):
        a = paired_summary(diffs, method=method, seed=7)
        assert a == paired_summary(diffs, method=method, seed=7)
        assert not a.sufficient and a.as_dict()["sufficient"] is False
    assert [len(g) for g in group_by_prompt(diffs)] == [2] * 5
    # one prompt: no interval exists (JSON None), no test
    one = paired_summary({("p", 0): 0.3, ("p", 1): 0.5})
    assert math.isinf(one.ci_low) and one.as_dict()["ci_low"] is None
    assert one.p_value is None and one.effect_dz is None and one.mean == pytest.approx(0.4)
    with pytest.raises(ValueError, match="unknown interval method"):
        paired_summary(diffs, method="percentile")


def test_seed_noise_averages_out_inside_a_prompt() -> None:
    """Clusters, not pairs: seeds that disagree inside a prompt do not widen the interval when
    every prompt's mean is the same."""
    noisy = {(f"p{p}", s): 0.1 + (0.2 if s == 0 else -0.2) for p in range(6) for s in range(2)}
    s = paired_summary(noisy)
    assert s.ci_high - s.ci_low == pytest.approx(0.0) and s.mean == pytest.approx(0.1)
