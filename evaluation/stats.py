"""Paired statistics over a prompt × seed design: hierarchical bootstrap, signed-rank, effect size.

Prompts are the unit that generalises (a new prompt is a new draw); seeds are repeated measures
within a prompt. So the bootstrap resamples prompts first, then seeds within each chosen prompt,
and the signed-rank test runs on per-prompt mean differences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PairedSummary:
    """Mean paired difference with its interval, test and effect size."""

    mean: float
    ci_low: float
    ci_high: float
    confidence: float
    n_prompts: int
    n_pairs: int
    wilcoxon_p: float | None  # None when the test cannot run (fewer than 2 non-zero prompts)
    effect_dz: float | None  # Cohen's d_z on per-prompt means; None when they do not vary
    rank_biserial: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def group_by_prompt(diffs: dict[tuple[str, int], float]) -> list[np.ndarray]:
    """{(prompt, seed): difference} → one array of seed differences per prompt (stable order)."""
    groups: dict[str, list[float]] = {}
    for (prompt, _seed), d in sorted(diffs.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        groups.setdefault(prompt, []).append(float(d))
    return [np.asarray(v) for v in groups.values()]


def hierarchical_bootstrap(
    groups: list[np.ndarray], resamples: int = 2000, seed: int = 0
) -> np.ndarray:
    """Bootstrap distribution [resamples] of the grand mean: prompts, then seeds within each."""
    rng = np.random.default_rng(seed)
    n = len(groups)
    picks = rng.integers(0, n, size=(resamples, n))
    means = np.empty((resamples, n))
    for g, values in enumerate(groups):
        # every (resample, slot) that picked prompt g gets its own seed resample
        mask = picks == g
        k = int(mask.sum())
        if k:
            idx = rng.integers(0, len(values), size=(k, len(values)))
            means[mask] = values[idx].mean(axis=1)
    return means.mean(axis=1)


def paired_summary(
    diffs: dict[tuple[str, int], float],
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedSummary:
    """Everything the verdict and the report say about one paired difference."""
    groups = group_by_prompt(diffs)
    if not groups:
        raise ValueError("no paired differences to summarise")
    per_prompt = np.array([g.mean() for g in groups])
    boot = hierarchical_bootstrap(groups, resamples, seed)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    p, rbc = _signed_rank(per_prompt)
    sd = float(per_prompt.std(ddof=1)) if len(per_prompt) > 1 else 0.0
    return PairedSummary(
        mean=float(np.mean([d for g in groups for d in g])),
        ci_low=float(low),
        ci_high=float(high),
        confidence=confidence,
        n_prompts=len(groups),
        n_pairs=sum(len(g) for g in groups),
        wilcoxon_p=p,
        effect_dz=float(per_prompt.mean() / sd) if sd > 0 else None,
        rank_biserial=rbc,
    )


def _signed_rank(per_prompt: np.ndarray) -> tuple[float | None, float | None]:
    """Wilcoxon signed-rank p (two-sided) and the matched-pairs rank-biserial correlation."""
    from scipy.stats import rankdata, wilcoxon

    nonzero = per_prompt[per_prompt != 0]
    if len(nonzero) < 2:
        return None, None
    p = float(wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided").pvalue)
    ranks = rankdata(np.abs(nonzero))
    rbc = float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())
    return p, rbc
