"""`registry.fetch`: one call for an in-house API to get a verified adapter file, no torch.

    from registry import fetch
    path = fetch("acme.mascot@champion", for_="diffusers")   # -> Path to the .safetensors
    pipe.load_lora_weights(str(path.parent))

The file lands in a cache folder per model and version (`$LTX_LORA_ADAPTER_CACHE`, else
`~/.cache/ltx-lora/adapters`), so a second call for the same version downloads nothing; an alias
is resolved on every call, so a promotion is picked up by the next one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from registry.names import split_model_name
from stagekit.errors import UserError

CACHE_ENV = "LTX_LORA_ADAPTER_CACHE"


def fetch(
    ref: str,
    for_: str = "diffusers",
    *,
    tracking_uri: str | None = None,
    cache: Path | None = None,
    base: str | None = None,
    allow_cross_version: bool = False,
) -> Path:
    """The verified file of `ref` (`name@alias|version`, a bare name means @champion) for
    consumer `for_`. Registry: `tracking_uri`, else $MLFLOW_TRACKING_URI, else the workspace's
    sqlite ($LTX_LORA_WORKSPACE). Refused like `ltx-lora pull`: a champion whose licence record
    does not allow client distribution, a `base` LTX version it was not made or tested for."""
    from registry.compat import check_base
    from registry.describe import fetch_version
    from registry.licence import audience_of, require
    from registry.pull import pull, recorded_manifest
    from registry.read import parse_ref
    from registry.store import client_workspace, open_client

    name, which = parse_ref(ref)
    client = open_client(_uri(tracking_uri), experiment=None)
    with client_workspace(client, split_model_name(name)[0]):
        mv = fetch_version(client, name, which)
        require(mv, audience_of(which), f"fetch of {name}@{which}")
        check_base(mv, base, allow_cross_version)
        folder = _cache(cache) / name / f"v{mv.version}" / for_
        cached = _cached(folder, name, recorded_manifest(client, mv), for_)
    if cached is not None:
        return cached
    got = pull(
        client,
        name,
        str(mv.version),
        for_,
        folder,
        base=base,
        allow_cross_version=allow_cross_version,
    )
    return got.path


def _cached(folder: Path, name: str, manifest: dict[str, Any], consumer: str) -> Path | None:
    """The file an earlier fetch placed, if its size and the sha256 the version records still
    match (the record's sha256 was checked against the bytes when they were fetched)."""
    from registry.pull import CONSUMERS

    record = folder / f"{name}.pull.json"
    entry = manifest.get(CONSUMERS.get(consumer, "") + ".safetensors")
    if entry is None or not record.is_file():
        return None
    info = json.loads(record.read_text(encoding="utf-8"))
    path = Path(info.get("path", ""))
    ok = info.get("sha256") == entry["sha256"] and path.is_file()
    return path if ok and path.stat().st_size == int(entry["bytes"]) else None


def _uri(tracking_uri: str | None) -> str:
    if tracking_uri:
        return tracking_uri
    if env := os.environ.get("MLFLOW_TRACKING_URI"):
        return env
    from registry.store import local_tracking_uri, sqlite_path
    from stagekit.workspace import Workspace

    uri = local_tracking_uri(Workspace.from_env().mlflow_dir)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise UserError(f"no registry at {db}: pass tracking_uri= or set MLFLOW_TRACKING_URI")
    return uri


def _cache(cache: Path | None) -> Path:
    if cache is not None:
        return Path(cache)
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ltx-lora" / "adapters")
