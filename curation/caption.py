"""`ltx-lora caption`: one caption per curated clip, from the first backend that answers.

Order: a reviewed caption (imported from a review sheet) always wins; then `cfg.backends` in
order: `sidecar` (`<source stem>.txt` or `.json` beside the source), `vlm` (a local
vision-language model, `curation.vlm`), `template`. The written manifest keeps every curated
field; `path` stays relative to the curated folder. Checks (trigger word, length, empty,
duplicates across sources) are listed in `checks.jsonl`, never silently fixed.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curation.card import DatasetCard
from curation.config import CaptionConfig
from curation.review import load_reviewed, reviewed_caption, reviewed_path
from stagekit.errors import UserError
from stagekit.files import atomic_dir, read_jsonl, write_jsonl
from stagekit.hashing import sha256_file, sha256_json
from stagekit.stage import load_record, save_record

# Bump when the captioning rules change: old outputs then re-caption.
CAPTION_VERSION = 2
SIDECAR_SUFFIX = ".txt"
JSON_SIDECAR_SUFFIX = ".json"
CHECKS_NAME = "checks.jsonl"
SUMMARY_KEYS = ("captioned", "from_reviewed", "from_sidecar", "from_vlm", "from_template")


def caption(
    curated_dir: Path,
    raw_dir: Path,
    out_dir: Path,
    card: DatasetCard,
    cfg: CaptionConfig,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Caption every row of `curated_dir/manifest.jsonl` into `out_dir/manifest.jsonl`.

    `on_batch(n_done)` is called after each model batch (progress hooks, interruption tests).
    """
    manifest = Path(curated_dir) / "manifest.jsonl"
    if not manifest.is_file():
        raise UserError(f"{manifest} is missing: run `ltx-lora curate` first")
    rows = read_jsonl(manifest)
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    sidecars = {src: read_sidecar(raw_dir, src) for src in sorted({r["source"] for r in rows})}
    review_file = reviewed_path(raw_dir)
    fingerprint = sha256_json(
        {
            "version": CAPTION_VERSION,
            "manifest": sha256_file(manifest),
            "sidecars": sidecars,
            "reviewed": sha256_file(review_file) if review_file.is_file() else None,
            "card": card.model_dump(),
            "config": cfg.model_dump(),
            "vlm": _model_identity(cfg) if "vlm" in cfg.backends else None,
        }
    )
    if (record := load_record(out_dir, fingerprint)) is not None:
        return {**{k: record[k] for k in (*SUMMARY_KEYS, "checks")}, "skipped": True}
    texts = _answers(rows, sidecars, load_reviewed(review_file), cfg)
    if "vlm" in cfg.backends:
        _fill_from_vlm(rows, texts, Path(curated_dir), out_dir, cfg, on_batch)
    captioned = [{**row, **_finish(texts[row["id"]], card, cfg)} for row in rows]
    checks = check_captions(captioned, card, cfg)
    summary = _summary(captioned, checks)
    if cfg.fail_on_check and checks:
        first = checks[0]
        raise UserError(
            f"{len(checks)} caption checks failed, first: clip {first['id']} ({first['source']}) "
            f"{first['check']}: {first['detail']}; fix the captions (review sheet) or set "
            "curation.caption.fail_on_check=false"
        )
    with atomic_dir(out_dir) as tmp:
        write_jsonl(tmp / "manifest.jsonl", captioned)
        write_jsonl(tmp / CHECKS_NAME, checks)
        save_record(tmp, "caption", fingerprint, summary)
    return {**summary, "skipped": False}


def read_sidecar(raw_dir: Path, source: str) -> str | None:
    """The caption in `<source stem>.txt` (or `.json` with a "caption" key), as one line."""
    stem = raw_dir / source
    text_path, json_path = stem.with_suffix(SIDECAR_SUFFIX), stem.with_suffix(JSON_SIDECAR_SUFFIX)
    if text_path.is_file():
        text = text_path.read_text(encoding="utf-8")
    elif json_path.is_file():
        text = _json_caption(json_path)
    else:
        return None
    return " ".join(text.split()) or None


def caption_for(sidecar: str | None, card: DatasetCard, cfg: CaptionConfig) -> dict[str, Any]:
    """`caption` and `caption_source` for one clip from its sidecar or the template."""
    answer = (sidecar, "sidecar") if sidecar is not None else (None, "template")
    return _finish(answer, card, cfg)


def has_word(text: str, word: str) -> bool:
    """`word` appears as a whole word (case-sensitive: tokenizers see 'Zorblat' differently)."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None


def check_captions(rows: list[dict], card: DatasetCard, cfg: CaptionConfig) -> list[dict]:
    """Failed checks, one dict each: empty, missing_trigger, too_short, too_long, duplicate."""
    failures: list[dict] = []
    sources_of: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        sources_of[row["caption"]].add(row["source"])
    for row in rows:
        text, words = row["caption"], len(row["caption"].split())
        found: list[tuple[str, str]] = []
        if not text.strip():
            found.append(("empty", "the caption is empty"))
        if not has_word(text, card.trigger):
            found.append(("missing_trigger", f"no '{card.trigger}' in the caption"))
        if text.strip() and words < cfg.min_words:
            found.append(("too_short", f"{words} words (< {cfg.min_words})"))
        if words > cfg.max_words:
            found.append(("too_long", f"{words} words (> {cfg.max_words})"))
        if text.strip() and len(sources_of[text]) > 1:
            n = len(sources_of[text]) - 1
            found.append(("duplicate", f"the same caption as clips of {n} other sources"))
        failures += [
            {"id": row["id"], "source": row["source"], "check": c, "detail": d, "caption": text}
            for c, d in found
        ]
    return failures


def _answers(
    rows: list[dict],
    sidecars: dict[str, str | None],
    reviewed: dict[str, Any],
    cfg: CaptionConfig,
) -> dict[str, tuple[str | None, str]]:
    """Per clip id: (text or None, backend), from a batched datasets.map over the manifest."""
    from datasets import Dataset, Features, Value

    table = Dataset.from_dict(
        {
            "id": [r["id"] for r in rows],
            "source": [r["source"] for r in rows],
            "source_sha256": [r["source_sha256"] for r in rows],
            "start_s": [float(r["start_s"]) for r in rows],
        }
    )
    answered = table.map(
        _answer_batch,
        batched=True,
        fn_kwargs={"sidecars": sidecars, "reviewed": reviewed, "backends": list(cfg.backends)},
        features=Features({"id": Value("string"), "text": Value("string"), "by": Value("string")}),
        remove_columns=table.column_names,
        desc="caption",
    )
    return {r["id"]: (r["text"], r["by"]) for r in answered}


def _answer_batch(
    batch: dict[str, list], sidecars: dict, reviewed: dict, backends: list[str]
) -> dict[str, list]:
    out: dict[str, list] = {"id": [], "text": [], "by": []}
    for cid, src, sha, start in zip(
        batch["id"], batch["source"], batch["source_sha256"], batch["start_s"], strict=True
    ):
        text, by = reviewed_caption(reviewed, cid, sha, start), "reviewed"
        if text is None:
            text, by = _first_answer(backends, sidecars.get(src))
        out["id"].append(cid)
        out["text"].append(text)
        out["by"].append(by)
    return out


def _first_answer(backends: list[str], sidecar: str | None) -> tuple[str | None, str]:
    """The first backend that can answer now; `vlm` answers later, `template` always does."""
    for name in backends:
        if name == "sidecar" and sidecar is not None:
            return sidecar, "sidecar"
        if name in ("vlm", "template"):
            return None, name
    return None, "template"


def _fill_from_vlm(
    rows: list[dict],
    texts: dict[str, tuple[str | None, str]],
    curated: Path,
    out_dir: Path,
    cfg: CaptionConfig,
    on_batch: Callable[[int], None] | None,
) -> None:
    from curation.vlm import caption_clips  # the only place torch/transformers load

    wanted = [(r["id"], curated / r["path"]) for r in rows if texts[r["id"]] == (None, "vlm")]
    if not wanted:
        return
    progress = out_dir.with_name(f".{out_dir.name}.vlm-progress.jsonl")
    done = caption_clips(wanted, cfg.vlm, progress, _model_identity(cfg), on_batch)
    for cid, _ in wanted:
        texts[cid] = (done[cid], "vlm")


def _finish(answer: tuple[str | None, str], card: DatasetCard, cfg: CaptionConfig) -> dict:
    """The caption with the template filled in and the trigger rule applied (and recorded)."""
    text, by = answer
    if text is None:
        text, by = _template(card, cfg), "template"
    out: dict[str, Any] = {"caption": text, "caption_source": by}
    if cfg.require_trigger and not has_word(text, card.trigger):
        out["caption"] = f"{card.trigger}, {text}"
        out["trigger_added"] = True  # a configured fix, recorded so the review sheet shows it
    return out


def _template(card: DatasetCard, cfg: CaptionConfig) -> str:
    return cfg.template.format(
        trigger=card.trigger, class_noun=card.class_noun, client=card.client, adapter=card.adapter
    )


def _json_caption(path: Path) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}): fix it") from e
    if not isinstance(data, dict) or not isinstance(data.get("caption", ""), str):
        raise UserError(f'{path}: write {{"caption": "..."}} (a JSON object with a caption)')
    return data.get("caption", "")


def _model_identity(cfg: CaptionConfig) -> list | None:
    """Names, sizes and times of the model folder's files: cheap, unlike hashing GBs."""
    if not cfg.vlm.path:
        return None
    root = Path(cfg.vlm.path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return [[p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _summary(rows: list[dict], checks: list[dict]) -> dict[str, Any]:
    by = Counter(r["caption_source"] for r in rows)
    return {
        "captioned": len(rows),
        "from_reviewed": by["reviewed"],
        "from_sidecar": by["sidecar"],
        "from_vlm": by["vlm"],
        "from_template": by["template"],
        "checks": dict(sorted(Counter(c["check"] for c in checks).items())),
    }
