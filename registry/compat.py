"""Base-version compatibility: which LTX-2 versions an adapter was trained and evaluated on.

An adapter trained on one LTX-2 version is unreliable on another, so `pull --base` and
`generate` refuse a version the adapter was neither trained on nor evaluated on (with a passing
verdict, on its own eval suite) unless told `--allow-cross-version`. Each evaluation that reaches
the registry is kept as a version tag `tested.<ltx version>` (JSON: verdict, eval suite, base
model, key score, when); evaluating a registered adapter on a second base version and registering
that evaluation adds one to the existing version.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from registry.names import KEY_SCORE
from stagekit.errors import UserError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from registry.inputs import EvalRun
    from registry.register import Registration

TESTED_PREFIX = "tested."


def tested_tags(evaluation: EvalRun, suite: str | None) -> dict[str, str]:
    """`{tested.<version>: JSON}` for an evaluation that names the LTX version it ran on."""
    rec = evaluation.record
    extra = rec.model_extra or {}
    version = extra.get("ltx_version")
    if not version or (rec.verdict == "unscored" and not rec.scores):
        return {}
    entry = {
        "verdict": rec.verdict,
        "eval_suite": suite,
        "base_model": extra.get("base_model"),
        KEY_SCORE: rec.scores.get(KEY_SCORE),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return {f"{TESTED_PREFIX}{version}": json.dumps(entry, sort_keys=True)}


def evaluated_on(tags: dict[str, str]) -> dict[str, dict[str, Any]]:
    """LTX version → what its evaluation said, for every version the adapter was scored on
    (a version registered before `tested.*` tags counts its own verdict on its own version)."""
    out: dict[str, dict[str, Any]] = {}
    for key, raw in tags.items():
        if key.startswith(TESTED_PREFIX):
            try:
                out[key[len(TESTED_PREFIX) :]] = json.loads(raw)
            except ValueError:
                continue
    own = tags.get("ltx_version")
    if own and own not in out and tags.get("verdict", "unscored") != "unscored":
        out[own] = {"verdict": tags["verdict"], "eval_suite": tags.get("eval_suite")}
    return dict(sorted(out.items()))


def supported_bases(tags: dict[str, str]) -> list[str]:
    """The versions the adapter may be used on without `--allow-cross-version`: the one it was
    trained on, and each where it passed on its own eval suite (the same prompts, the same gate)."""
    own = tags.get("ltx_version")
    suite = tags.get("eval_suite")
    ok = {v for v, e in evaluated_on(tags).items() if _passed_same_suite(e, suite)}
    return sorted(ok | ({own} if own else set()))


def check_base(mv: Any, base: str | None, allow: bool) -> str | None:
    """None when `mv` fits base version `base` (or none was named); a warning when it does not
    but `allow`; else a UserError saying what was trained and tested and what to do."""
    if base is None:
        return None
    tags = dict(mv.tags or {})
    fits = supported_bases(tags)
    if not tags.get("ltx_version") or base in fits:
        return None
    tested = ", ".join(f"{v} ({e.get('verdict')})" for v, e in evaluated_on(tags).items())
    what = (
        f"{mv.name} version {mv.version} was trained on LTX-{tags['ltx_version']} "
        f"({tags.get('base_model', '?')}, hash {str(tags.get('base_model_hash', '?'))[:12]}) "
        f"and evaluated on {tested or 'none'}, not on LTX-{base}"
    )
    if allow:
        return f"{what}: used anyway (--allow-cross-version); results may differ"
    raise UserError(
        f"{what}: an adapter does not reliably carry across base versions. Evaluate it on "
        f"LTX-{base} with the same suite and gate and register that evaluation "
        "(ltx-lora evaluate model=… then ltx-lora register model=…), or pass "
        "--allow-cross-version"
    )


def record_tested(client: MlflowClient, reg: Registration, evaluation: EvalRun) -> Registration:
    """An evaluation of an already registered adapter (the duplicate case): record the LTX
    version it ran on as tested on that version; the message says so."""
    from registry.version_record import eval_suite

    tags = tested_tags(evaluation, eval_suite(evaluation))
    if not tags:
        return reg
    mv = client.get_model_version(reg.name, str(reg.version))
    have = dict(mv.tags or {})
    ((key, value),) = tags.items()
    if _same_entry(have.get(key), value):
        return reg
    client.set_model_version_tag(reg.name, str(reg.version), key, value)
    entry = json.loads(value)
    own_suite = have.get("eval_suite")
    note = (
        f"; its evaluation on LTX-{key[len(TESTED_PREFIX) :]} is recorded on version "
        f"{reg.version} (verdict {entry['verdict']}"
        + ("" if entry["eval_suite"] == own_suite else ", on another eval suite: not counted")
        + ")"
    )
    return replace(reg, message=reg.message + note)


def _passed_same_suite(entry: dict[str, Any], suite: str | None) -> bool:
    return entry.get("verdict") == "pass" and (suite is None or entry.get("eval_suite") == suite)


def _same_entry(old: str | None, new: str) -> bool:
    """Equal but for `when`: re-registering the same evaluation changes nothing."""
    if old is None:
        return False
    try:
        a, b = json.loads(old), json.loads(new)
    except ValueError:
        return False
    a.pop("when", None)
    b.pop("when", None)
    return a == b
