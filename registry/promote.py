"""Gated promotion: move `champion` only to a version that passed and scored at least as well.

Every alias move (promote, forced promote, rollback) is recorded as one registered-model tag
`audit.<ms>-<random>` holding a JSON event {who, when, alias, from, to, why, ...}: it lives in
the same database and under the same permissions as the model, one write per move, and two
writers never collide on a key.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from registry.describe import fetch_version, known_models, known_versions
from registry.licence import require
from registry.names import CHAMPION, EVAL_SUITE_TAG, KEY_SCORE, split_model_name
from registry.retire import refuse_archived
from registry.store import client_workspace
from stagekit.errors import UserError

if TYPE_CHECKING:
    from mlflow import MlflowClient

AUDIT_PREFIX = "audit."


@dataclass(frozen=True)
class AliasEvent:
    """One alias move, as recorded. `from_version` None: the alias was not set before."""

    action: str  # promote | force-promote | rollback | licence | archive
    alias: str
    from_version: int | None
    to_version: int
    who: str
    when: str  # ISO 8601, UTC
    why: str
    mlflow_user: str | None = None
    key_score: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def promote(
    client: MlflowClient,
    name: str,
    version: int,
    *,
    force: bool = False,
    reason: str | None = None,
    actor: str | None = None,
    key_score: str = KEY_SCORE,
) -> AliasEvent | None:
    """Point `champion` at `version` if its verdict passed and its key score is at least the
    current champion's on the same eval suite; `force` (with a reason) skips both checks.
    None when it is the champion already (nothing moves, nothing is recorded)."""
    if force and not (reason and reason.strip()):
        raise UserError("--force needs --reason '<why>': a forced promotion is recorded with it")
    with client_workspace(client, split_model_name(name)[0]):
        candidate = fetch_version(client, name, str(version))
        current = _champion(client, name)
        if current is not None and int(current.version) == int(candidate.version):
            return None
        refuse_archived(candidate, f"promotion of {name} version {version}")
        require(candidate, "client", f"promotion of {name} version {version} to {CHAMPION}")
        why = _gate(candidate, current, key_score, force)
        why = f"{reason.strip()} ({why})" if reason and reason.strip() else why
        action = "force-promote" if force else "promote"
        return _move(client, name, candidate, current, action, why, actor, key_score)


def rollback(
    client: MlflowClient, name: str, *, reason: str | None = None, actor: str | None = None
) -> AliasEvent:
    """Point `champion` back at the version it replaced (the `from` of the move that made the
    current champion); repeated rollbacks walk further back."""
    with client_workspace(client, split_model_name(name)[0]):
        current = _champion(client, name)
        if current is None:
            raise UserError(f"{name} has no champion to roll back: {known_versions(client, name)}")
        previous = _previous_champion(alias_history(client, name), int(current.version))
        if previous is None:
            raise UserError(
                f"{name} version {current.version} was the first champion: there is nothing "
                "to roll back to (promote another version instead)"
            )
        target = fetch_version(client, name, str(previous))
        refuse_archived(target, f"rollback of {name} to version {previous}")
        require(target, "client", f"rollback of {name} to version {previous}")
        why = reason.strip() if reason and reason.strip() else "rollback"
        return _move(client, name, target, current, "rollback", why, actor, None)


def alias_history(client: MlflowClient, name: str, alias: str | None = None) -> list[AliasEvent]:
    """Every recorded alias move of `name`, oldest first (only `alias`'s when given)."""
    with client_workspace(client, split_model_name(name)[0]):
        model = _registered_model(client, name)
        tags = model.tags or {}
    events = [_event(tags[k]) for k in sorted(tags) if k.startswith(AUDIT_PREFIX)]
    return [e for e in events if alias is None or e.alias == alias]


def record_event(client: MlflowClient, name: str, event: AliasEvent) -> str:
    """Write one event as a registered-model tag; returns the tag key."""
    key = f"{AUDIT_PREFIX}{int(time.time() * 1000):015d}-{secrets.token_hex(3)}"
    client.set_registered_model_tag(name, key, event.to_json())
    return key


def actor_name(actor: str | None = None) -> str:
    """`--actor` if given, else the OS user."""
    if actor and actor.strip():
        return actor.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def utc_now() -> str:
    """Now, ISO 8601 in UTC, as events record it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _gate(candidate: Any, current: Any, key_score: str, force: bool) -> str:
    """Why the move is allowed, or a UserError saying why not."""
    tags = candidate.tags or {}
    verdict = tags.get("verdict", "unscored")
    ours = _score(tags, key_score)
    if force:
        return f"forced; verdict {verdict}, {key_score} {_fmt(ours)}"
    if verdict != "pass":
        raise UserError(
            f"{candidate.name} version {candidate.version} has verdict {verdict!r}, not 'pass': "
            "evaluate it (ltx-lora evaluate) or use --force --reason '<why>'"
        )
    if current is None:
        return f"first champion; verdict pass, {key_score} {_fmt(ours)}"
    return _compare_with_champion(candidate, current, key_score, ours)


def _compare_with_champion(candidate: Any, current: Any, key_score: str, ours: float | None) -> str:
    theirs = _score(current.tags or {}, key_score)
    head = f"{candidate.name} version {candidate.version}"
    ours_suite = (candidate.tags or {}).get(EVAL_SUITE_TAG)
    their_suite = (current.tags or {}).get(EVAL_SUITE_TAG)
    if ours_suite != their_suite:
        raise UserError(
            f"{head} was scored on eval suite {ours_suite or 'unknown'}, champion version "
            f"{current.version} on {their_suite or 'unknown'}: scores do not compare; evaluate "
            "both on one suite or use --force --reason '<why>'"
        )
    if ours is None or theirs is None:
        missing = current.version if theirs is None else candidate.version
        raise UserError(
            f"version {missing} has no score.{key_score} tag: cannot compare with the champion; "
            "use --force --reason '<why>'"
        )
    if ours < theirs:
        raise UserError(
            f"{head} scores {key_score} {_fmt(ours)} < champion version {current.version}'s "
            f"{_fmt(theirs)}: not promoted (use --force --reason '<why>' to override)"
        )
    return f"verdict pass; {key_score} {_fmt(ours)} >= {_fmt(theirs)} of version {current.version}"


def _move(
    client: MlflowClient,
    name: str,
    target: Any,
    current: Any,
    action: str,
    why: str,
    actor: str | None,
    key_score: str | None,
) -> AliasEvent:
    """Set the alias, then record the move; if recording fails the alias goes back."""
    event = AliasEvent(
        action=action,
        alias=CHAMPION,
        from_version=int(current.version) if current is not None else None,
        to_version=int(target.version),
        who=actor_name(actor),
        when=utc_now(),
        why=why,
        mlflow_user=os.environ.get("MLFLOW_TRACKING_USERNAME") or None,
        key_score=key_score,
    )
    client.set_registered_model_alias(name, CHAMPION, target.version)
    try:
        record_event(client, name, event)
    except BaseException:
        # An unrecorded move must not stand: put the alias back as it was.
        if current is None:
            client.delete_registered_model_alias(name, CHAMPION)
        else:
            client.set_registered_model_alias(name, CHAMPION, current.version)
        raise
    return event


def champion_chain(events: list[AliasEvent]) -> list[int]:
    """The stack of champions the recorded moves leave: a promotion pushes, a rollback pops."""
    chain: list[int] = []
    for e in events:
        if e.alias != CHAMPION:
            continue
        if e.action == "rollback":
            chain = chain[:-1] if len(chain) > 1 else [e.to_version]
            if chain[-1] != e.to_version:  # moved outside ltx-lora meanwhile: trust the record
                chain.append(e.to_version)
        else:
            if not chain and e.from_version is not None:
                chain.append(e.from_version)
            chain.append(e.to_version)
    return chain


def _previous_champion(events: list[AliasEvent], current: int) -> int | None:
    """The champion before `current` on the recorded chain, or None (first, or unrecorded)."""
    chain = champion_chain(events)
    if not chain or chain[-1] != current:
        raise UserError(
            f"champion is version {current} but the recorded moves end at "
            f"{chain[-1] if chain else 'none'}: it was moved outside ltx-lora; "
            "promote the version you want explicitly"
        )
    return chain[-2] if len(chain) > 1 else None


def _champion(client: MlflowClient, name: str) -> Any | None:
    aliases = _registered_model(client, name).aliases or {}
    version = aliases.get(CHAMPION)
    return None if version is None else client.get_model_version(name, str(version))


def _registered_model(client: MlflowClient, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise UserError(f"no registered model {name!r}: {known_models(client)}") from e


def _event(raw: str) -> AliasEvent:
    data = json.loads(raw)
    return AliasEvent(**{k: data.get(k) for k in AliasEvent.__dataclass_fields__})


def _score(tags: dict[str, str], key: str) -> float | None:
    try:
        return float(tags[f"score.{key}"])
    except (KeyError, ValueError):
        return None


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"
