"""The message of a registration refused as a duplicate: same adapter bytes as an earlier version.

The adapter's sha256 covers its weights and its metadata header, which carries the lineage
(dataset hash, base model hash, config hash, git commit): the same sha256 means the same weights
from the same data, settings and code. Refusing (rather than adding a version) keeps one version
per adapter; the earlier version is named so the user can pull or promote it.
"""

from __future__ import annotations

from typing import Any


def duplicate_message(
    name: str, mv: Any, sha: str, lineage: Any | None, lineage_tags: tuple[str, ...]
) -> str:
    """One line: which version already holds this adapter, and whether its lineage tags match."""
    aliases = ", ".join(sorted(mv.aliases or [])) or "no alias"
    head = (
        f"refused as a duplicate: {name} version {mv.version} ({aliases}) already holds this "
        f"adapter (sha256 {sha[:12]}…"
    )
    differing = _differing(mv, lineage, lineage_tags)
    if differing:
        head += f"; its lineage tags differ in {', '.join(differing)}"
    else:
        head += ", same weights and lineage"
    return head + f"); nothing registered. Use it: ltx-lora pull {name}@{mv.version} --for …"


def _differing(mv: Any, lineage: Any | None, tags: tuple[str, ...]) -> list[str]:
    if lineage is None:
        return []
    held = dict(mv.tags or {})
    return [t for t in tags if t in held and held[t] != str(getattr(lineage, t, ""))]
