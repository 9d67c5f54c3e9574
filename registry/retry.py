"""Which MLflow errors are worth another try, and how long to wait before it."""

from __future__ import annotations

import random

VERSION_ATTEMPTS = 8
_TRANSIENT = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"}


def transient(error: Exception) -> bool:
    """A version-number race, a concurrent insert of the same row (the server's upserts are
    look-up-then-insert) or a server-side hiccup: worth another try."""
    code = getattr(error, "error_code", "")
    text = str(error)
    return code in _TRANSIENT or "Model Version creation error" in text or collided(text)


def collided(text: str) -> bool:
    """True for a unique-key violation (PostgreSQL's or sqlite's wording)."""
    return "UniqueViolation" in text or "unique constraint" in text.lower()


def backoff(attempt: int) -> float:
    """Seconds before try `attempt + 1`: doubling from 0.2 s, capped at 8, jittered ±50 %
    so processes that collided once do not collide again in step."""
    return min(8.0, 0.2 * 2**attempt) * (0.5 + random.random())
