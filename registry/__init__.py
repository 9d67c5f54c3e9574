"""The adapter registry on MLflow: register, describe, and (later) promote and pull adapters.

Light on purpose: no torch and nothing of ours but `stagekit`, so an inference surface can install
just the `registry` extra to pull adapters. MLflow itself is imported lazily, inside functions.

Public surface:
- `registry.config.RegistryConfig`: the `registry:` section of the pipeline config.
- `registry.store`: `local_tracking_uri`, `ensure_schema`, `open_client`, `ensure_experiment`.
- `registry.register`: `register_adapter`, `Registration` (a duplicate comes back with a message;
  also under concurrency). What a version records: `registry.version_record`; what goes into
  its run: `registry.run_files`.
- `registry.scan`: `check_adapter` (NaN / Inf / all-zero / below-noise adapters refused).
- `registry.pull`: `pull` (one file per consumer: comfyui, ltx-pipelines, diffusers), checked
  against the version's `file.<name>` tags, staged outside the destination (`registry.staging`).
- `registry.errors`: `one_line_errors` (refusals, an unreachable server, a full disk as UserErrors).
- `registry.server`, `registry.server_guard`: the team server and its immutable-versions rule.
- `registry.describe`: `describe_version`, `format_registration`.
- `registry.licence`, `registry.compat`: licence/distribution records, base-version checks.
- `registry.sync`: `sync` (a folder holding exactly the adapters it is entitled to).
- `registry.fetch(ref, for_=...)`: a verified adapter file for an in-house API (registry.api).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fetch(ref: str, for_: str = "diffusers", **options: Any) -> Path:
    """The verified adapter file of `ref` (e.g. "acme.mascot@champion") for consumer `for_`;
    see registry.api.fetch for the options. Imports MLflow only when called."""
    from registry.api import fetch as _fetch

    return _fetch(ref, for_, **options)
