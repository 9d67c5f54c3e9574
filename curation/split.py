"""Train/validation split: the configured share by clips and by duration, sources whole where
possible.

Sources go to validation whole, in a seeded order, while that brings both shares closer to
the target. When whole sources cannot get within the margin (one source dominates), the largest
training source is split once, at the boundary that best meets the target, scene cuts first;
clips that would let near-identical frames cross that boundary are dropped (`split_guard`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from curation import dedupe
from stagekit.hashing import sha256_json

# The report warns when a share misses the target by more than this (absolute: 0.05 is five
# percentage points), or by more than one clip's worth when the dataset is too small for that,
# and whenever a non-zero target leaves validation empty.
SPLIT_MARGIN = 0.05
# Inside a scene, neighbouring clips are near-identical: validation clips starting this close
# to the last training clip of the same scene are dropped. Across a scene cut none are.
GUARD_S = 1.0


@dataclass
class Split:
    """Rows with their `split`, rows dropped by the guard, and what was achieved."""

    rows: list[dict[str, Any]]
    guarded: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def split_dataset(
    rows: list[dict[str, Any]], fraction: float, seed: int, max_distance: int = 6
) -> Split:
    """Assign each manifest row a split; deterministic in `seed` (see the module docstring).

    Rows need `source`, `frames`, `fps`, `scene`, `start_s`, `end_s` (and `phash` for the
    near-duplicate guard inside a split source).
    """
    if not rows:
        return Split([], [], _report([], fraction, [], 0))
    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_source[r["source"]].append(r)
    whole = _whole_sources(by_source, fraction, seed)
    # Splitting a source inside only adds to validation, so it may do better from one whole
    # source fewer (three equal sources and a 20 % target: a third is too much).
    plans = [_plan(by_source, rows, v, fraction, max_distance) for v in (whole, whole[:-1])]
    chosen, guarded, split_sources = min(plans, key=lambda p: _rank(p, rows, fraction))
    dropped = {id(r) for r in guarded}
    out = [{**r, "split": chosen.get(id(r), "train")} for r in rows if id(r) not in dropped]
    return Split(out, guarded, _report(out, fraction, split_sources, len(guarded)))


Plan = tuple[dict[int, str], list[dict], list[str]]  # row id -> split, guarded rows, split sources


def _plan(
    by_source: dict[str, list[dict]],
    rows: list[dict],
    validation: list[str],
    fraction: float,
    max_distance: int,
) -> Plan:
    """`validation`'s sources whole, plus a split inside the largest other one if that helps."""
    val_rows = [r for s in validation for r in by_source[s]]
    chosen = {id(r): "validation" for r in val_rows}
    if fraction <= 0 or _within(_shares(rows, val_rows), fraction, rows):
        return chosen, [], []
    inner = _split_inside(by_source, validation, rows, val_rows, fraction, max_distance)
    if inner is None:
        return chosen, [], []
    source, inner_val, guarded = inner
    return chosen | {id(r): "validation" for r in inner_val}, guarded, [source]


def _rank(plan: Plan, rows: list[dict], fraction: float) -> tuple[bool, int, float]:
    """Within the margin first, then fewest clips dropped, then closest to the target."""
    chosen, guarded, _ = plan
    dropped = {id(r) for r in guarded}
    kept = [r for r in rows if id(r) not in dropped]
    val = [r for r in kept if id(r) in chosen]
    shares = _shares(kept, val)
    return not _within(shares, fraction, kept), len(guarded), _error(shares, fraction)


def _whole_sources(by_source: dict[str, list[dict]], fraction: float, seed: int) -> list[str]:
    """Sources that go to validation whole: each, in seeded order, if it brings the shares
    closer to the target. The seeded order means adding a source moves few others."""
    order = sorted(by_source, key=lambda s: sha256_json([seed, s]))
    rows = [r for s in order for r in by_source[s]]
    chosen: list[str] = []
    val: list[dict] = []
    for source in order:
        if fraction <= 0 or len(chosen) == len(order) - 1:
            break  # at least one source always trains
        trial = val + by_source[source]
        if _error(_shares(rows, trial), fraction) < _error(_shares(rows, val), fraction):
            chosen.append(source)
            val = trial
    return chosen


def _split_inside(
    by_source: dict[str, list[dict]],
    validation: list[str],
    rows: list[dict],
    val_rows: list[dict],
    fraction: float,
    max_distance: int,
) -> tuple[str, list[dict], list[dict]] | None:
    """(source, its validation rows, guard-dropped rows) for the best boundary inside the
    largest training source, or None when no boundary beats whole sources.

    Every boundary is scored in one pass (running sums); the frame comparison runs once, for
    the chosen boundary.
    """
    training = [s for s in by_source if s not in validation]
    source = max(training, key=lambda s: (len(by_source[s]), s))
    clips = sorted(by_source[source], key=lambda r: r["start_s"])
    n, total = len(rows), sum(_duration(r) for r in rows)
    base_n, base_d = len(val_rows), sum(_duration(r) for r in val_rows)
    tail_d = [0.0] * (len(clips) + 1)
    for i in range(len(clips) - 1, -1, -1):
        tail_d[i] = tail_d[i + 1] + _duration(clips[i])
    by_clips, by_time = margins(rows)
    best: tuple[tuple[bool, bool, float], int] | None = None
    for k in range(1, len(clips)):
        near = _near_boundary(clips, k)
        if k + len(near) >= len(clips):
            continue
        lost = sum(_duration(r) for r in near)
        shares = (
            (base_n + len(clips) - k - len(near)) / (n - len(near)),
            (base_d + tail_d[k] - lost) / (total - lost),
        )
        miss = (abs(shares[0] - fraction) > by_clips, abs(shares[1] - fraction) > by_time)
        rank = (any(miss), clips[k - 1]["scene"] == clips[k]["scene"], _error(shares, fraction))
        if best is None or rank < best[0]:
            best = (rank, k)
    if best is None or best[0][2] >= _error(_shares(rows, val_rows), fraction):
        return None
    k = best[1]
    guard = _near_boundary(clips, k) + _repeats(clips[:k], clips[k:], max_distance)
    dropped = {id(r) for r in guard}
    return source, [r for r in clips[k:] if id(r) not in dropped], _unique(guard)


def _near_boundary(clips: list[dict], k: int) -> list[dict]:
    """Clips after boundary `k` in the same scene as the last training clip and starting
    within GUARD_S of its end: their first frames nearly repeat its last ones."""
    last, out = clips[k - 1], []
    for r in clips[k:]:
        if r["scene"] != last["scene"] or r["start_s"] - last["end_s"] >= GUARD_S:
            break
        out.append(r)
    return out


def _repeats(head: list[dict], tail: list[dict], max_distance: int) -> list[dict]:
    """Validation-side clips whose frames match a training clip's (a scene that comes back)."""
    items = [(f"t{i}", "train", r["phash"]) for i, r in enumerate(head) if r.get("phash")]
    items += [(f"v{i}", "validation", r["phash"]) for i, r in enumerate(tail) if r.get("phash")]
    alike = dedupe.near_duplicates(items, max_distance) if items else {}
    return [r for i, r in enumerate(tail) if f"v{i}" in alike]


def _unique(rows: list[dict]) -> list[dict]:
    out: list[dict] = []
    for r in rows:
        if not any(r is o for o in out):
            out.append(r)
    return out


def _duration(row: dict[str, Any]) -> float:
    return row["frames"] / row["fps"]


def _shares(rows: Sequence[dict], val: Sequence[dict]) -> tuple[float, float]:
    """(share of clips, share of duration) in `val`."""
    total = sum(_duration(r) for r in rows)
    return len(val) / len(rows), (sum(_duration(r) for r in val) / total if total else 0.0)


def _error(shares: tuple[float, float], fraction: float) -> float:
    return max(abs(shares[0] - fraction), abs(shares[1] - fraction))


def margins(rows: Sequence[dict]) -> tuple[float, float]:
    """How far each share may miss the target: SPLIT_MARGIN, or one clip's worth if larger."""
    total = sum(_duration(r) for r in rows)
    longest = max((_duration(r) for r in rows), default=0.0)
    n = max(1, len(rows))
    return max(SPLIT_MARGIN, 1 / n), max(SPLIT_MARGIN, longest / total if total else 1.0)


def _within(shares: tuple[float, float], fraction: float, rows: Sequence[dict]) -> bool:
    by_clips, by_time = margins(rows)
    return (
        abs(shares[0] - fraction) <= by_clips + 1e-9 and abs(shares[1] - fraction) <= by_time + 1e-9
    )


def _report(
    rows: list[dict], fraction: float, split_sources: list[str], guarded: int
) -> dict[str, Any]:
    val = [r for r in rows if r["split"] == "validation"]
    shares = _shares(rows, val) if rows else (0.0, 0.0)
    by_clips, by_time = margins(rows)
    # No validation clip at all is always worth a warning: there is nothing to validate on.
    ok = not rows or (_within(shares, fraction, rows) and (bool(val) or fraction == 0))
    warning = None
    if not ok:
        warning = (
            f"validation holds {shares[0]:.1%} of clips and {shares[1]:.1%} of duration; "
            f"the target is {fraction:.1%} (margin {by_clips:.1%} of clips, {by_time:.1%} of "
            "duration): too few sources or scenes to split closer"
        )
    return {
        "target": fraction,
        "clips_share": round(shares[0], 4),
        "duration_share": round(shares[1], 4),
        "margin_clips": round(by_clips, 4),
        "margin_duration": round(by_time, 4),
        "split_sources": split_sources,
        "guard_dropped": guarded,
        "warning": warning,
    }


def guard_quarantine(row: dict[str, Any]) -> tuple[str, str]:
    """(reason, detail) for a clip the guard dropped."""
    return "split_guard", (
        f"{row['source']} is split between training and validation; this clip lies within "
        f"{GUARD_S:g} s of the boundary or repeats a training clip's frames"
    )
