"""`ltx-lora curate`: raw clips -> bucketed, re-encoded clips + manifest.jsonl + quarantine.jsonl.

The per-file steps (probe, segment) run as batched `datasets.Dataset.map` calls over a table of
inputs, in worker processes. Every input file lands in exactly one place: as the source of
manifest rows, or as one file-level quarantine row. Clip names hash the source bytes, the span,
the bucket and the media settings, so a clip's name says what it holds.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from curation import dedupe
from curation.buckets import nearest_bucket, resolve_buckets
from curation.card import DatasetCard
from curation.config import CurationConfig
from curation.ingest import STILL_SUFFIXES, VIDEO_SUFFIXES, list_inputs
from curation.outcomes import kept_segments, outcomes, quarantine_row
from curation.per_source import CURATE_VERSION, probe_batch, segment_batch, settings_hash
from curation.references import attach, split_inputs
from curation.split import Split, guard_quarantine, split_dataset
from ltx.buckets import BucketRules
from stagekit.files import atomic_dir, read_jsonl, write_jsonl
from stagekit.hashing import sha256_file, sha256_json
from stagekit.stage import load_record, save_record

__all__ = [
    "STILL_SUFFIXES",
    "VIDEO_SUFFIXES",
    "check_buckets",
    "curate",
    "format_summary",
    "list_inputs",
    "nearest_bucket",
]

SOURCES_FILE = "sources.jsonl"  # per-source results before dedupe: what a rerun reuses


def curate(
    raw_dir: Path,
    out_dir: Path,
    card: DatasetCard,
    cfg: CurationConfig,
    rules: BucketRules,
    reference_dirs: Sequence[Path] | None = None,
) -> dict[str, Any]:
    """Curate every file under `raw_dir` into `out_dir` (atomically); skip if already done.

    `reference_dirs` (default: `raw_dir/../reference` when it exists) hold held-out clips that
    no curated clip may nearly duplicate.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    buckets = resolve_buckets(cfg, rules)
    # `<clip>_ref<N>` files are a clip's reference sheet (curation/references.py), not clips
    inputs, sheets = split_inputs(list_inputs(raw_dir), raw_dir)
    refs = default_reference_dirs(raw_dir) if reference_dirs is None else list(reference_dirs)
    hashes = tree_hashes(raw_dir)
    fingerprint = sha256_json(
        {
            "version": CURATE_VERSION,
            "config": cfg.model_dump(exclude={"caption", "workers"}),  # captions: next stage's
            "rules": asdict(rules),
            "card": card.model_dump(),
            "raw": sha256_json(hashes),
            "reference": [tree_digest(Path(r)) for r in refs],
        }
    )
    if (record := load_record(out_dir, fingerprint)) is not None:
        return {**{k: record[k] for k in SUMMARY_KEYS}, "skipped": True}
    with atomic_dir(out_dir) as tmp:
        (tmp / "clips").mkdir()
        sources = Sources(inputs, raw_dir, sheets, rules, hashes)
        summary = _curate_into(sources, tmp, cfg, buckets, refs, previous=out_dir)
        save_record(tmp, "curate", fingerprint, summary)
    return {**summary, "skipped": False}


SUMMARY_KEYS = (
    "inputs",
    "sources_curated",
    "curated",
    "reused",
    "splits",
    "quarantined",
    "segments_dropped",
    "split",
)


def check_buckets(cfg: CurationConfig, rules: BucketRules) -> None:
    """Every configured bucket must be a shape the model encodes; else name the bad one."""
    resolve_buckets(cfg, rules)


def default_reference_dirs(raw_dir: Path) -> list[Path]:
    """The dataset's `reference/` folder beside `raw/`, when there is one."""
    ref = Path(raw_dir).parent / "reference"
    return [ref] if ref.is_dir() else []


def tree_digest(root: Path) -> str:
    """Hash of a folder's files (links by their target path, never read through)."""
    return sha256_json(tree_hashes(root))


def tree_hashes(root: Path) -> list[list[str]]:
    """`[relative path, sha256]` per file under `root`, `[path, "link", target]` per link."""
    entries = []
    if root.is_dir():
        for path in list_inputs_quiet(root):
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries.append([rel, "link", os.readlink(path)])
            else:
                entries.append([rel, sha256_file(path)])
    return entries


def list_inputs_quiet(root: Path) -> list[Path]:
    """Every non-hidden file or link under `root`, sidecars included."""
    out = []
    for base, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(base) / n for n in names if not n.startswith(".")]
    return sorted(out)


def format_summary(summary: dict[str, Any]) -> str:
    """A small plain-text table: inputs, clips per split, quarantined files and segments."""
    n_sources = summary.get("sources_curated", "")
    lines: list[tuple[str, object]] = [("inputs", summary["inputs"])]
    lines += [("curated sources", n_sources)] if n_sources != "" else []
    lines += [("clips", summary["curated"])]
    lines += [(f"  {split}", n) for split, n in summary["splits"].items()]
    lines.append(("quarantined files", sum(summary["quarantined"].values())))
    lines += [(f"  {reason}", n) for reason, n in sorted(summary["quarantined"].items())]
    dropped = summary.get("segments_dropped", {})
    if dropped:
        lines.append(("dropped segments", sum(dropped.values())))
        lines += [(f"  {reason}", n) for reason, n in sorted(dropped.items())]
    lines += [("reused", summary["reused"])] if summary.get("reused") else []  # not re-encoded
    width = max(len(label) for label, _ in lines) + 2
    text = "\n".join(f"{label:<{width}}{n!s:>5}" for label, n in lines)
    text += split_line(summary.get("split"))
    if summary.get("skipped"):
        text += "\n(up to date: nothing re-curated)"
    if summary["curated"] == 0:
        text += "\nno clip survived curation: see quarantine.jsonl for why"
    return "curate\n" + text


def split_line(report: dict[str, Any] | None) -> str:
    """The achieved validation share, and the warning when it misses the target's margin."""
    if not report:
        return ""
    text = (
        f"\nvalidation share {report['clips_share']:.1%} of clips, "
        f"{report['duration_share']:.1%} of duration (target {report['target']:.1%})"
    )
    if report["split_sources"]:
        text += f"; split inside {', '.join(report['split_sources'])}"
    return text + (f"\nwarning: {report['warning']}" if report["warning"] else "")


# --- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """The clip inputs under `raw_dir`, each clip's reference sheet, the bucket rules, and
    the files' hashes as the run's fingerprint read them (`tree_hashes`): each file is read
    once to hash it, not again to probe it."""

    inputs: list[Path]
    raw_dir: Path
    sheets: dict[str, list[str]]
    rules: BucketRules
    hashes: list[list[str]]

    def known_hashes(self) -> list[str | None]:
        """Each input's sha256 (None for a link: its target is hashed when it is probed)."""
        sha = {e[0]: e[1] for e in self.hashes if len(e) == 2}
        return [sha.get(p.relative_to(self.raw_dir).as_posix()) for p in self.inputs]


def _curate_into(
    sources: Sources,
    out: Path,
    cfg: CurationConfig,
    buckets: list[tuple[int, int]],
    refs: list[Path],
    previous: Path,
) -> dict[str, Any]:
    from datasets import Dataset, Value

    inputs, raw_dir = sources.inputs, sources.raw_dir
    text = Value("string")
    names = [p.relative_to(raw_dir).as_posix() for p in inputs]
    table = Dataset.from_dict({"source": names, "sha256": sources.known_hashes()})
    args = {"cfg_json": cfg.model_dump_json(), "buckets": [list(b) for b in buckets]}
    probe_cols = {k: text for k in ("source", "sha256", "reason", "detail", "info")}
    probed = _map(table, probe_batch, cfg, "probe", {**args, "raw_dir": str(raw_dir)}, probe_cols)
    probed = probed.add_column("duplicate_of", _exact_duplicates(probed, raw_dir))
    todo = probed.filter(_needs_segments, batched=True).flatten_indices()
    results: dict[str, dict] = {}
    if len(todo):
        todo = todo.add_column("previous", _previous_results(previous, todo, cfg))
        work = {**args, "clips_dir": str(out / "clips"), "previous_clips": str(previous / "clips")}
        cols = {"source": text, "result": text}
        segmented = _map(todo, segment_batch, cfg, "segment", work, cols)
        results = {r["source"]: json.loads(r["result"]) for r in segmented}
    write_jsonl(out / SOURCES_FILE, [results[s] for s in sorted(results)])
    ref_hashes = _reference_hashes(refs, cfg, buckets)
    _drop_duplicates_and_leaks(results, ref_hashes, cfg, out / "clips")
    rows, dropped = outcomes(probed, results, cfg)
    if sources.sheets:  # conformed beside their clips; a broken one quarantines its clip
        rows = attach(rows, dropped, sources.sheets, raw_dir, out, cfg, sources.rules)
    split = _split(rows, dropped, cfg, out)
    rows = split.rows
    write_jsonl(out / "manifest.jsonl", rows)
    write_jsonl(out / "quarantine.jsonl", dropped)
    reused = sum(len(kept_segments(r)) for r in results.values() if r["reused"])
    summary = {**_summary(len(inputs), rows, dropped, reused), "split": split.report}
    from curation.report import THUMBS_DIR, write_report

    write_report(out, rows, dropped, summary)
    shutil.rmtree(out / THUMBS_DIR, ignore_errors=True)
    return summary


def _split(rows: list[dict], dropped: list[dict], cfg: CurationConfig, out: Path) -> Split:
    """Assign splits; clips the split's guard drops are deleted and quarantined."""
    distance = cfg.filters.dedupe_distance
    split = split_dataset(rows, cfg.validation_fraction, cfg.split_seed, distance)
    for row in split.guarded:
        for path in [row["path"], *(r["path"] for r in row.get("references", []))]:
            (out / path).unlink(missing_ok=True)
        reason, detail = guard_quarantine(row)
        span = (row["start_s"], row["end_s"])
        dropped.append(quarantine_row(row["source"], row["source_sha256"], reason, detail, span))
    return split


def _map(
    ds: Any, fn: Any, cfg: CurationConfig, desc: str, kwargs: dict[str, Any], columns: dict
) -> Any:
    """A batched `Dataset.map` replacing the columns, in up to `cfg.workers` processes.

    `columns` types the output (name -> datasets feature): a batch of all-None would else
    give a column no type.
    """
    from datasets import Features

    workers = cfg.workers or os.cpu_count() or 1
    procs = min(workers, len(ds))
    return ds.map(
        fn,
        batched=True,
        batch_size=1,  # one file a call: a slow 4K clip never holds up a batch of small ones
        num_proc=procs if procs > 1 else None,
        remove_columns=ds.column_names,
        fn_kwargs=kwargs,
        features=Features(columns),
        desc=desc,
    )


# --- across files ----------------------------------------------------------------------------


def _exact_duplicates(probed: Any, raw_dir: Path) -> list[str | None]:
    """For each row, the source with the same bytes that is kept (None for that one).

    Real files win over links to them, then the first path in sorted order.
    """
    rows = list(zip(probed["source"], probed["sha256"], probed["reason"], strict=True))
    order = sorted(range(len(rows)), key=lambda i: ((raw_dir / rows[i][0]).is_symlink(), i))
    kept: dict[str, str] = {}
    out: list[str | None] = [None] * len(rows)
    for i in order:
        source, sha, reason = rows[i]
        if sha and reason is None:
            first = kept.setdefault(sha, source)
            out[i] = first if first != source else None
    return out


def _needs_segments(batch: dict[str, list]) -> list[bool]:
    return [
        r is None and d is None for r, d in zip(batch["reason"], batch["duplicate_of"], strict=True)
    ]


def _previous_results(previous: Path, todo: Any, cfg: CurationConfig) -> list[str]:
    """Last run's per-source results (JSON) for sources whose bytes and settings are unchanged."""
    path = previous / SOURCES_FILE
    if not path.is_file():
        return [""] * len(todo)
    wanted = settings_hash(cfg)
    old = {
        (r["sha256"], json.dumps(r["plan"], sort_keys=True)): r
        for r in read_jsonl(path)
        if r.get("settings") == wanted and r.get("reason") is None
    }
    out = []
    for sha, info in zip(todo["sha256"], todo["info"], strict=True):
        plan = json.dumps(json.loads(info)["plan"], sort_keys=True)
        hit = old.get((sha, plan))
        out.append(json.dumps(hit) if hit else "")
    return out


def _reference_hashes(
    refs: list[Path], cfg: CurationConfig, buckets: list[tuple[int, int]]
) -> list[str]:
    """Signatures of every reference frame (none when leakage checks are off)."""
    files = [p for r in refs if r.is_dir() for p in list_inputs_quiet(r)]
    files = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES | STILL_SUFFIXES]
    if not cfg.filters.leakage or not files:
        return []
    from datasets import Dataset, List, Value

    table = Dataset.from_dict({"path": [str(p) for p in files]})
    luma = cfg.filters.letterbox_luma if cfg.filters.letterbox else None
    args = {"buckets": [list(b) for b in buckets], "luma": luma, "fps": cfg.fps}
    cols = {"hashes": List(Value("string"))}
    hashed = _map(table, _reference_batch, cfg, "hash references", args, cols)
    return [h for row in hashed["hashes"] for h in row]


def _reference_batch(
    batch: dict[str, list], buckets: list[list[int]], luma: float | None, fps: float
) -> dict[str, list]:
    sizes: list[tuple[int, int]] = [(b[0], b[1]) for b in buckets]
    hashes = [dedupe.reference_hashes(Path(p), sizes, luma, fps) for p in batch["path"]]
    return {"hashes": hashes}


def _drop_duplicates_and_leaks(
    results: dict[str, dict], ref_hashes: list[str], cfg: CurationConfig, clips: Path
) -> None:
    """Mark kept segments that nearly duplicate another source's or a reference; delete them."""
    f = cfg.filters
    # The copy with the most source pixels is kept (then the first path): the best master.
    order = sorted(results, key=lambda src: (-_pixels(results[src]), src))
    items = [(s["clip_id"], src, s["phash"]) for src in order for s in kept_segments(results[src])]
    dupes = dedupe.near_duplicates(items, f.dedupe_distance) if f.dedupe else {}
    where = {
        s["clip_id"]: (src, s["start_s"]) for src in results for s in kept_segments(results[src])
    }
    for source in sorted(results):
        for seg in kept_segments(results[source]):
            if seg["clip_id"] in dupes:
                other = where[dupes[seg["clip_id"]]]
                reason, detail = "near_duplicate", f"looks like {other[0]} at {other[1]:.2f} s"
            elif f.leakage and dedupe.leaks(seg["phash"], ref_hashes, f.dedupe_distance):
                reason, detail = "leakage", "looks like a reference (held-out) clip"
            else:
                continue
            (clips / f"{seg['clip_id']}.mp4").unlink(missing_ok=True)
            seg.update(reason=reason, detail=detail, clip_id=None)


def _pixels(result: dict[str, Any]) -> int:
    w, h = result["probe"]["display_size"]
    return int(w * h)


def _summary(n_inputs: int, rows: list[dict], dropped: list[dict], reused: int) -> dict[str, Any]:
    splits = Counter(r["split"] for r in rows)
    files = Counter(q["reason"] for q in dropped if q["level"] == "file")
    segments = Counter(q["reason"] for q in dropped if q["level"] == "segment")
    return {
        "inputs": n_inputs,
        "sources_curated": len({r["source"] for r in rows}),
        "curated": len(rows),
        "reused": reused,
        "splits": {"train": splits["train"], "validation": splits["validation"]},
        "quarantined": dict(sorted(files.items())),
        "segments_dropped": dict(sorted(segments.items())),
    }
