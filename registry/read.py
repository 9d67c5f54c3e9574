"""Reading the registry: list models, show a version, compare two, trace a version's lineage."""

from __future__ import annotations

import json
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.compat import evaluated_on, supported_bases
from registry.describe import fetch_version
from registry.inputs import ADAPTER_DIR, MANIFEST_NAME
from registry.licence import record_of
from registry.names import CI_SUFFIXES, EVAL_SUITE_TAG, LINEAGE_TAGS, split_model_name
from registry.store import client_workspace, workspaces_enabled
from stagekit.errors import UserError

if TYPE_CHECKING:
    from mlflow import MlflowClient

LINEAGE_GROUPS = {
    "data": ("dataset_hash",),
    "code": ("git_commit", "config_hash"),
    "base model": ("base_model", "base_model_hash", "ltx_version"),
}


def parse_ref(ref: str, default: str = "champion") -> tuple[str, str]:
    """`name@alias|version` → (name, alias or version); a bare name means `@default`."""
    name, _, which = ref.partition("@")
    split_model_name(name)
    return name, which or default


def list_models(client: MlflowClient, client_slug: str | None = None) -> list[dict[str, Any]]:
    """One row per registered model (of `client_slug` when given): versions and aliases.
    On a server with workspaces each client is a workspace: all those this user may see."""
    rows = []
    for workspace in _workspaces(client, client_slug):
        with client_workspace(client, workspace) if workspace else nullcontext():
            rows += [_model_row(client, m) for m in _search_models(client)]
    if client_slug:
        known = sorted({r["client"] for r in rows})
        rows = [r for r in rows if r["client"] == client_slug]
        if not rows and not workspaces_enabled(client.tracking_uri):
            raise UserError(f"no client {client_slug!r}: {_clients_text(known)}")
    return sorted(rows, key=lambda r: r["name"])


def show(client: MlflowClient, name: str, ref: str) -> dict[str, Any]:
    """A version's tags split into lineage and scores, its aliases, description and files."""
    with client_workspace(client, split_model_name(name)[0]):
        mv = fetch_version(client, name, ref)
        files = read_manifest(client, mv)
        aliases = _aliases_of(client, name, int(mv.version))
    tags = dict(mv.tags or {})
    return {
        "name": name,
        "version": int(mv.version),
        "aliases": aliases,
        "verdict": tags.get("verdict", "unscored"),
        "scores": scores_of(tags),
        "intervals": intervals(scores_of(tags)),
        "eval_suite": tags.get(EVAL_SUITE_TAG),
        "lineage": {k: tags.get(k) for k in LINEAGE_TAGS} | {"trigger": tags.get("trigger")},
        "adapter_sha256": tags.get("adapter_sha256"),
        "run_id": mv.run_id,
        "source": mv.source,
        "created": int(mv.creation_timestamp or 0),
        "description": mv.description or "",
        "files": files,
        "licence": record_of(tags),
        "evaluated_on": evaluated_on(tags),
        "supported_bases": supported_bases(tags),
        "archived": tags.get("archived"),
    }


def compare(client: MlflowClient, a: tuple[str, str], b: tuple[str, str]) -> dict[str, Any]:
    """Two versions side by side: every lineage field and score, and which ones differ."""
    left, right = show(client, *a), show(client, *b)
    fields = {}
    for key in sorted(set(left["lineage"]) | set(right["lineage"])):
        fields[key] = (left["lineage"].get(key), right["lineage"].get(key))
    scores = {
        k: (left["scores"].get(k), right["scores"].get(k))
        for k in sorted(set(left["scores"]) | set(right["scores"]))
    }
    cis = {
        k: (left["intervals"].get(k), right["intervals"].get(k))
        for k in sorted(set(left["intervals"]) | set(right["intervals"]))
    }
    return {
        "a": f"{left['name']} v{left['version']}",
        "b": f"{right['name']} v{right['version']}",
        "verdict": (left["verdict"], right["verdict"]),
        "same_suite": left["eval_suite"] == right["eval_suite"],
        "lineage": fields,
        "scores": scores,
        "intervals": cis,
        "differs": sorted(k for k, (x, y) in {**fields, **scores}.items() if x != y),
    }


def lineage(client: MlflowClient, name: str, ref: str) -> dict[str, Any]:
    """Which data, code and base model made a version, and the run that trained it."""
    info = show(client, name, ref)
    with client_workspace(client, split_model_name(name)[0]):
        inputs = _dataset_inputs(client, info["run_id"])
    groups = {g: {k: info["lineage"].get(k) for k in keys} for g, keys in LINEAGE_GROUPS.items()}
    groups["data"]["inputs"] = inputs
    return {
        "name": name,
        "version": info["version"],
        **groups,
        "run": {"run_id": info["run_id"], "adapter_sha256": info["adapter_sha256"]},
    }


def read_manifest(client: MlflowClient, mv: Any) -> dict[str, dict[str, Any]]:
    """The version's `files.json`: `{file: {"sha256", "bytes"}}`; a UserError when missing."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="ltx-lora-manifest-") as tmp:
        try:
            path = client.download_artifacts(mv.run_id, f"{ADAPTER_DIR}/{MANIFEST_NAME}", tmp)
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except (MlflowException, OSError, ValueError) as e:
            raise UserError(
                f"{mv.name} version {mv.version} has no readable {ADAPTER_DIR}/{MANIFEST_NAME} "
                f"({type(e).__name__}): its files cannot be verified; register it again"
            ) from e


def scores_of(tags: dict[str, str]) -> dict[str, float]:
    """`score.<name>` tags as floats."""
    out = {}
    for key, value in tags.items():
        if key.startswith("score."):
            try:
                out[key[len("score.") :]] = float(value)
            except ValueError:
                continue
    return dict(sorted(out.items()))


def intervals(scores: dict[str, float]) -> dict[str, tuple[float, float]]:
    """`{X: (low, high)}` for each score `X` whose `X_ci_low` and `X_ci_high` are present."""
    low, high = CI_SUFFIXES
    return {
        k: (scores[k + low], scores[k + high])
        for k in scores
        if k + low in scores and k + high in scores
    }


def _model_row(client: MlflowClient, model: Any) -> dict[str, Any]:
    versions = client.search_model_versions(f"name = '{model.name}'")
    numbers = sorted(int(v.version) for v in versions)
    tags = model.tags or {}
    owner, adapter = tags.get("client"), tags.get("adapter")
    if not owner:
        owner, adapter = split_model_name(model.name)
    return {
        "name": model.name,
        "client": owner,
        "adapter": adapter,
        "versions": len(numbers),
        "latest": numbers[-1] if numbers else None,
        "aliases": {a: int(v) for a, v in sorted((model.aliases or {}).items())},
    }


def _workspaces(client: MlflowClient, client_slug: str | None) -> list[str | None]:
    """The workspaces to look in: the clients' on a server with workspaces, else [None]."""
    if not workspaces_enabled(client.tracking_uri):
        return [None]
    visible = sorted(w.name for w in client.list_workspaces() if w.name != "default")
    if client_slug is None:
        return list(visible)
    if client_slug not in visible:
        raise UserError(f"no client {client_slug!r} visible to you: {_clients_text(visible)}")
    return [client_slug]


def _clients_text(clients: list[str]) -> str:
    return f"clients here: {', '.join(clients)}" if clients else "no clients are registered here"


def _search_models(client: MlflowClient) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_registered_models(max_results=1000))
    except MlflowException as e:
        if e.error_code != "PERMISSION_DENIED":
            raise
        return []  # a workspace listed to this user that it may not read: nothing to show


def _aliases_of(client: MlflowClient, name: str, version: int) -> list[str]:
    aliases = client.get_registered_model(name).aliases or {}
    return sorted(a for a, v in aliases.items() if int(v) == version)


def _dataset_inputs(client: MlflowClient, run_id: str) -> list[dict[str, str]]:
    run = client.get_run(run_id)
    inputs = run.inputs.dataset_inputs if run.inputs else []
    return [
        {"name": d.dataset.name, "digest": d.dataset.digest, "source": d.dataset.source}
        for d in inputs
    ]
