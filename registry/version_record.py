"""What a registered version records about itself: its tags (lineage, verdict, scores, eval
suite, licence) and the few readable lines of its description."""

from __future__ import annotations

import logging
from typing import Any

from registry.compat import tested_tags
from registry.inputs import EvalRun, TrainRun
from registry.licence import licence_tags
from registry.names import EVAL_SUITE_TAG, LINEAGE_TAGS
from stagekit.hashing import sha256_json

log = logging.getLogger(__name__)


def version_tags(
    train: TrainRun, evaluation: EvalRun, sha: str, card: dict[str, Any] | None
) -> dict[str, str]:
    """Lineage, verdict and one `score.<name>` per eval score, all as strings."""
    lineage = train.record.lineage
    tags = {key: str(getattr(lineage, key)) for key in LINEAGE_TAGS}
    tags["adapter_sha256"] = sha
    tags["verdict"] = evaluation.record.verdict
    tags.update({f"score.{k}": repr(v) for k, v in sorted(evaluation.record.scores.items())})
    suite = eval_suite(evaluation)
    if suite is not None:
        tags[EVAL_SUITE_TAG] = suite
    strength = (evaluation.record.model_extra or {}).get("adapter_strength")
    if strength is not None:  # what the scores were measured at: apply it at this strength
        tags["adapter_strength"] = repr(float(strength))
    if card and card.get("trigger"):
        tags["trigger"] = str(card["trigger"])  # what a prompt must contain to use the adapter
    rights, warnings = licence_tags(card, lineage.base_model, lineage.ltx_version)
    for warning in warnings:
        log.warning("%s", warning)
    return tags | rights | tested_tags(evaluation, suite)


def eval_suite(evaluation: EvalRun) -> str | None:
    """A short hash of what the scores were measured on (scorer backend, prompts and seeds,
    number of references, the rule): scores compare only between versions with the same one."""
    extra = evaluation.record.model_extra or {}
    if evaluation.record.verdict == "unscored" and not evaluation.record.scores:
        return None
    samples = [s for s in extra.get("per_sample") or [] if isinstance(s, dict)]
    suite = {
        "backend": extra.get("backend"),
        "prompts": sorted({f"{s.get('prompt')}|{s.get('seed')}" for s in samples}),
        "n_references": extra.get("n_references"),
        "rule": extra.get("rule"),
        "scores": sorted(evaluation.record.scores),
    }
    return sha256_json(suite)[:16]


def describe_adapter(train: TrainRun, evaluation: EvalRun, card: dict[str, Any] | None) -> str:
    """A few readable lines: the data, the base model, the training, the verdict and scores."""
    lin, rec = train.record.lineage, train.record
    return "\n".join(
        [
            f"LoRA adapter for LTX-2 base model `{lin.base_model}` "
            f"(hash {_short(lin.base_model_hash)}, ltx {lin.ltx_version}).",
            _data_line(lin.dataset_hash, card),
            _training_line(rec.run_name, rec.params, rec.final),
            _eval_line(evaluation),
            f"Code: git {_short(lin.git_commit)}, config {_short(lin.config_hash)}.",
        ]
    )


def _data_line(dataset_hash: str, card: dict[str, Any] | None) -> str:
    line = f"Data: dataset {_short(dataset_hash)}"
    if card:
        who = card.get("owner") or card.get("client", "?")
        line += f", {who}'s clips of a {card.get('class_noun', 'subject')}"
        if card.get("trigger"):
            line += f", trigger word `{card['trigger']}`"
        if card.get("rights"):
            line += f"; rights: {card['rights']}"
    return line + "."


def _training_line(run_name: str, params: dict[str, Any], final: dict[str, float]) -> str:
    keys = ("rank", "alpha", "lr", "learning_rate", "steps", "max_steps")
    shown = [f"{k} {params[k]}" for k in keys if k in params]
    shown += [f"final {k} {_num(v)}" for k, v in sorted(final.items())]
    return f"Training: run {run_name}" + (f"; {', '.join(shown)}." if shown else ".")


def _eval_line(evaluation: EvalRun) -> str:
    rec = evaluation.record
    if rec.verdict == "unscored" and not rec.scores:
        return "Evaluation: none (unscored)."
    scores = ", ".join(f"{k} {_num(v)}" for k, v in sorted(rec.scores.items()))
    return f"Evaluation: verdict {rec.verdict}" + (f"; scores: {scores}." if scores else ".")


def _short(value: str) -> str:
    return value[:12] if len(value) > 12 else value


def _num(value: float) -> str:
    return f"{value:.4g}"


FILE_TAG = "file."  # `file.<name>` = "<sha256>:<bytes>": the version's own record of each file


def file_tags(manifest: dict[str, dict[str, Any]]) -> dict[str, str]:
    """One tag per registered file: its sha256 and size. The version's tags, not the
    `files.json` stored beside the files, are what pulls check against: whoever can rewrite the
    stored files can rewrite that list too."""
    return {f"{FILE_TAG}{rel}": f"{e['sha256']}:{e['bytes']}" for rel, e in manifest.items()}


def recorded_files(tags: dict[str, str]) -> dict[str, dict[str, Any]]:
    """`{file: {"sha256", "bytes"}}` from a version's `file.<name>` tags (empty for versions
    registered before those tags)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in tags.items():
        if key.startswith(FILE_TAG) and ":" in value:
            sha, _, size = value.partition(":")
            out[key[len(FILE_TAG) :]] = {"sha256": sha, "bytes": int(size)}
    return out
