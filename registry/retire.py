"""Retire a version: archived, never deleted. Its files stay in the store until a stated date,
the archive is recorded in the history with who and why, and it can no longer be promoted or
synced."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from registry.licence import CLIENT_FACING
from stagekit.errors import UserError

if TYPE_CHECKING:
    from mlflow import MlflowClient

ARCHIVED_TAG = "archived"
DEFAULT_KEEP_DAYS = 365


def archive(
    client: MlflowClient,
    name: str,
    version: int,
    *,
    reason: str | None,
    actor: str | None = None,
    keep_days: int = DEFAULT_KEEP_DAYS,
) -> str:
    """Mark `version` archived (refused while `champion` points at it: move it first; other
    aliases on it, e.g. candidate, are removed); returns the archive note. Nothing is deleted:
    the note states until when files are kept."""
    from registry.describe import fetch_version
    from registry.names import split_model_name
    from registry.promote import AliasEvent, actor_name, record_event, utc_now
    from registry.store import client_workspace

    if not (reason and reason.strip()):
        raise UserError("archive needs --reason '<why>': it is recorded with it")
    if keep_days < 0:
        raise UserError("--keep-days must be 0 or more")
    with client_workspace(client, split_model_name(name)[0]):
        mv = fetch_version(client, name, str(version))
        if (note := (mv.tags or {}).get(ARCHIVED_TAG)) is not None:
            return note
        aliases = client.get_registered_model(name).aliases or {}
        held = sorted(a for a, v in aliases.items() if int(v) == int(version))
        if facing := [a for a in held if a in CLIENT_FACING]:
            raise UserError(
                f"{name} version {version} is {', '.join(facing)}: move the alias first "
                "(registry promote / rollback), then archive it"
            )
        until = time.strftime("%Y-%m-%d", time.gmtime(time.time() + keep_days * 86400))
        who = actor_name(actor)
        dropped = f"; alias {', '.join(held)} removed" if held else ""
        note = f"{utc_now()} by {who}: {reason.strip()}; files kept until {until}{dropped}"
        client.set_model_version_tag(name, str(version), ARCHIVED_TAG, note)
        for alias in held:  # e.g. candidate: an archived version is no one's candidate
            client.delete_registered_model_alias(name, alias)
        event = AliasEvent(
            action="archive",
            alias=ARCHIVED_TAG,
            from_version=int(version),
            to_version=int(version),
            who=who,
            when=utc_now(),
            why=f"{reason.strip()} (files kept until {until}{dropped})",
        )
        record_event(client, name, event)
    return note


def refuse_archived(mv: Any, action: str) -> None:
    """A UserError when `mv` is archived."""
    note = (mv.tags or {}).get(ARCHIVED_TAG)
    if note is not None:
        raise UserError(f"{action} refused: {mv.name} version {mv.version} is archived ({note})")
