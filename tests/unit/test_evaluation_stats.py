"""The paired statistics: the hierarchical bootstrap covers a known effect at about its nominal
rate, is deterministic by seed, and the signed-rank test and effect size point the right way."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.stats import group_by_prompt, hierarchical_bootstrap, paired_summary


def _simulate(rng: np.random.Generator, effect: float, prompts: int, seeds: int) -> dict:
    """Per-prompt true effects around `effect` plus seed noise: the design an evaluation has."""
    per_prompt = rng.normal(effect, 0.05, prompts)
    return {
        (f"p{p}", s): per_prompt[p] + rng.normal(0.0, 0.05)
        for p in range(prompts)
        for s in range(seeds)
    }


def test_bootstrap_covers_a_known_effect_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(1)
    trials, effect = 200, 0.1
    covered = sum(
        (s := paired_summary(_simulate(rng, effect, 8, 2), resamples=500, seed=i)).ci_low
        <= effect
        <= s.ci_high
        for i in range(trials)
    )
    # nominal 95 %: with 200 trials the binomial 99 % band is about 0.91-0.99
    assert 0.88 <= covered / trials <= 0.995


def test_interval_excludes_zero_for_a_clear_effect_and_includes_it_for_none() -> None:
    rng = np.random.default_rng(2)
    clear = paired_summary(_simulate(rng, 0.2, 10, 3))
    assert clear.ci_low > 0 and clear.wilcoxon_p < 0.01
    assert clear.effect_dz > 1 and clear.rank_biserial == 1.0
    null = paired_summary(_simulate(rng, 0.0, 10, 3))
    assert null.ci_low < 0 < null.ci_high


def test_deterministic_by_seed_and_hierarchical() -> None:
    diffs = _simulate(np.random.default_rng(3), 0.1, 5, 2)
    assert paired_summary(diffs, seed=7) == paired_summary(diffs, seed=7)
    groups = group_by_prompt(diffs)
    assert [len(g) for g in groups] == [2] * 5
    boot = hierarchical_bootstrap(groups, resamples=1000, seed=0)
    assert boot.shape == (1000,)
    # one prompt with one seed: nothing to resample, the interval collapses onto the value
    one = paired_summary({("p", 0): 0.3})
    assert one.ci_low == one.ci_high == pytest.approx(0.3)
    assert one.wilcoxon_p is None and one.effect_dz is None


def test_seed_resampling_widens_the_interval_when_seeds_disagree() -> None:
    calm = {(f"p{p}", s): 0.1 for p in range(6) for s in range(3)}
    noisy = {(f"p{p}", s): 0.1 + (0.2 if s == 0 else -0.1) for p in range(6) for s in range(3)}
    a, b = paired_summary(calm), paired_summary(noisy)
    assert a.ci_high - a.ci_low == pytest.approx(0.0)
    assert b.ci_high - b.ci_low > 0.05
