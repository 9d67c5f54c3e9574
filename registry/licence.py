"""Licence and distribution: what a version was made from, and who may receive it.

Each version carries, as tags: the base model's licence (`licence.base`, the licence file's
`licence.base_sha256` where the user gave it, a commercial agreement `licence.base_agreement`),
the dataset card's rights statement (`rights.owner`, `rights.statement`, `rights.licence`,
`rights.consent`) and a `distribution` flag: `internal` < `client` < `public`. A client-facing
move (promotion to `champion`, a pull or sync of it) needs `client`; the flag can only be raised
to a level whose requirements the record meets (`requirements`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stagekit.errors import UserError

if TYPE_CHECKING:
    from mlflow import MlflowClient

DISTRIBUTIONS = ("internal", "client", "public")
CLIENT_FACING = ("champion",)  # aliases a client's inference surface pulls
DISTRIBUTION_TAG = "distribution"
BASE_TAGS = ("licence.base", "licence.base_sha256", "licence.base_agreement")
RIGHTS_TAGS = ("rights.owner", "rights.statement", "rights.licence", "rights.consent")
CONSENTS = ("obtained", "no-people", "not-obtained")
COMMUNITY = "LTX-2 Community License"
# The base licence of each model the version layer knows (configs/model/*.yaml `name`). The LTX-2
# Community License makes a LoRA a Derivative; entities at or above US$10M annual revenue need a
# paid commercial agreement for non-research use, and the 2.5 model cards say transferring
# fine-tunes may need a paid licence: hence `licence.base_agreement` (see requirements).
BASE_LICENCES = {
    "ltx2": COMMUNITY,
    "ltx2.3": COMMUNITY,
    "ltx2.5": COMMUNITY,
    "ltx2-demo": "ltx-lora demo weights (trained in this repository, no third-party licence)",
    "ltx2-tiny": "ltx-lora tiny random weights (no third-party licence)",
}
AGREEMENT_FOR_CLIENT = ("2.5",)  # ltx versions whose fine-tunes need an agreement to transfer


def licence_tags(
    card: dict[str, Any] | None, base_model: str, ltx_version: str
) -> tuple[dict[str, str], list[str]]:
    """The version tags a registration records, and warnings naming what is missing. The
    distribution is `client` when the record allows it, else `internal` (with the reasons)."""
    card = card or {}
    tags = {
        "rights.owner": card.get("owner"),
        "rights.statement": card.get("rights"),
        "rights.licence": card.get("licence"),
        "rights.consent": card.get("consent"),
        "licence.base": BASE_LICENCES.get(base_model),
    }
    tags = {k: str(v) for k, v in tags.items() if v}
    blocked = requirements(tags | {"ltx_version": ltx_version}, "client")
    tags[DISTRIBUTION_TAG] = "internal" if blocked else "client"
    return tags, [f"registered as internal only: {r}" for r in blocked]


def requirements(tags: dict[str, str], level: str) -> list[str]:
    """What the record lacks for distribution `level` (empty: allowed)."""
    if level not in DISTRIBUTIONS:
        raise UserError(f"distribution {level!r}: use one of {', '.join(DISTRIBUTIONS)}")
    if level == "internal":
        return []
    missing = []
    if not tags.get("rights.owner"):
        missing.append("the dataset card has no `owner`")
    if not tags.get("rights.statement"):
        missing.append("the dataset card has no rights statement (`rights`)")
    if tags.get("rights.consent") == "not-obtained":
        missing.append("the dataset card says consent of the people shown was not obtained")
    if not tags.get("licence.base"):
        missing.append("no base model licence is recorded (registry licence --base-licence)")
    needs_agreement = level == "public" or tags.get("ltx_version") in AGREEMENT_FOR_CLIENT
    if needs_agreement and not tags.get("licence.base_agreement"):
        missing.append(
            f"no commercial agreement for the base model is recorded (LTX-{tags.get('ltx_version')}"
            " fine-tunes may need a paid licence to transfer): registry licence --agreement"
        )
    if level == "public":
        if not tags.get("rights.licence"):
            missing.append("the dataset card has no `licence` for the clips")
        if tags.get("rights.consent") not in ("obtained", "no-people"):
            missing.append("the dataset card does not state `consent: obtained` or `no-people`")
    return missing


def record_of(tags: dict[str, str]) -> dict[str, Any]:
    """The licence record of a version, for `show` (None where nothing was recorded)."""
    level = tags.get(DISTRIBUTION_TAG)
    return {
        "distribution": level,
        "base_licence": tags.get("licence.base"),
        "base_licence_sha256": tags.get("licence.base_sha256"),
        "base_agreement": tags.get("licence.base_agreement"),
        "data_owner": tags.get("rights.owner"),
        "data_rights": tags.get("rights.statement"),
        "data_licence": tags.get("rights.licence"),
        "consent": tags.get("rights.consent"),
        "blocks_client": requirements(tags, "client"),
    }


def refusal(mv: Any, level: str) -> str | None:
    """Why version `mv` may not go to `level`, or None."""
    tags = dict(mv.tags or {})
    head = f"{mv.name} version {mv.version}"
    have = tags.get(DISTRIBUTION_TAG)
    if have is None:
        return (
            f"{head} has no licence record (registered before licences were recorded): set one "
            "with `ltx-lora registry licence NAME VERSION --distribution client --reason …`"
        )
    if DISTRIBUTIONS.index(have) < DISTRIBUTIONS.index(level):
        why = "; ".join(requirements(tags, level)) or "its record was set so"
        return f"{head} is for {have!r} distribution only, not {level!r} ({why})"
    return None


def require(mv: Any, level: str, action: str) -> None:
    """A UserError saying why, when `mv` may not go to `level` for `action`."""
    reason = refusal(mv, level)
    if reason is not None:
        raise UserError(f"{action} refused: {reason}")


def audience_of(ref: str) -> str:
    """The distribution a pull of `ref` needs: `client` for a client-facing alias, else none."""
    return "client" if ref in CLIENT_FACING else "internal"


def set_licence(
    client: MlflowClient,
    name: str,
    version: int,
    changes: dict[str, str | None],
    *,
    reason: str | None,
    actor: str | None = None,
) -> dict[str, Any]:
    """Change a version's licence record (`changes`: tag → value; `licence_file` → its sha256),
    refusing a distribution the result would not meet; recorded in the history with who and
    why. Returns the new record."""
    from registry.describe import fetch_version
    from registry.names import split_model_name
    from registry.promote import AliasEvent, actor_name, record_event, utc_now
    from registry.store import client_workspace

    if not (reason and reason.strip()):
        raise UserError("a licence change needs --reason '<why>': it is recorded with it")
    changes = dict(changes)
    if (path := changes.pop("licence_file", None)) is not None:
        changes["licence.base_sha256"] = _file_sha256(Path(path))
    with client_workspace(client, split_model_name(name)[0]):
        mv = fetch_version(client, name, str(version))
        old = dict(mv.tags or {})
        if DISTRIBUTION_TAG not in old:  # registered before licences: start from its card
            old = _initial_record(client, mv) | old
        new = old | {k: v for k, v in changes.items() if v is not None}
        if new.get("rights.consent") not in (None, *CONSENTS):
            raise UserError(f"--consent: use one of {', '.join(CONSENTS)}")
        level = new.get(DISTRIBUTION_TAG) or "internal"
        if missing := requirements(new, level):
            raise UserError(f"{name} version {version} cannot be {level!r}: {'; '.join(missing)}")
        new[DISTRIBUTION_TAG] = level
        diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
        if not diff:
            return record_of(new)
        for key, (_, value) in diff.items():
            client.set_model_version_tag(name, str(version), key, value)
        what = ", ".join(f"{k} {a or '-'} → {b}" for k, (a, b) in sorted(diff.items()))
        event = AliasEvent(
            action="licence",
            alias=DISTRIBUTION_TAG,
            from_version=int(version),
            to_version=int(version),
            who=actor_name(actor),
            when=utc_now(),
            why=f"{reason.strip()} ({what})",
        )
        record_event(client, name, event)
    return record_of(new)


def _initial_record(client: MlflowClient, mv: Any) -> dict[str, str]:
    """The record a version registered before licences would have had, from its registered
    dataset card (`dataset_card.json`, when it has one) and base model."""
    import tempfile

    from mlflow.exceptions import MlflowException

    tags = dict(mv.tags or {})
    card = None
    with tempfile.TemporaryDirectory(prefix="ltx-lora-card-") as tmp:
        try:
            path = client.download_artifacts(mv.run_id, "dataset_card.json", tmp)
            card = json.loads(Path(path).read_text(encoding="utf-8"))
        except (MlflowException, OSError, ValueError):
            card = None
    record, _ = licence_tags(card, tags.get("base_model", ""), tags.get("ltx_version", ""))
    return {k: v for k, v in record.items() if k != DISTRIBUTION_TAG}


def _file_sha256(path: Path) -> str:
    from stagekit.hashing import sha256_file

    if not path.is_file():
        raise UserError(f"--licence-file {path} does not exist: give the base model's LICENSE file")
    return sha256_file(path)
