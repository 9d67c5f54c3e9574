"""Read a registered version back (by number or alias); say what was registered in a few lines."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from registry.licence import requirements
from registry.names import split_model_name
from registry.store import client_workspace
from stagekit.errors import UserError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from registry.register import Registration


def describe_version(client: MlflowClient, name: str, version_or_alias: str) -> dict[str, Any]:
    """`{name, version, aliases, tags, source, run_id, description}` of one version of `name`."""
    with client_workspace(client, split_model_name(name)[0]):
        mv = fetch_version(client, name, str(version_or_alias))
    return {
        "name": mv.name,
        "version": int(mv.version),
        "aliases": sorted(mv.aliases or []),
        "tags": dict(mv.tags or {}),
        "source": mv.source,
        "run_id": mv.run_id,
        "description": mv.description or "",
    }


def format_registration(reg: Registration, info: dict[str, Any]) -> str:
    """What the CLI prints after `register`: name, version, alias, verdict and scores."""
    tags = info.get("tags", {})
    if reg.created:
        head = f"registered {reg.name} version {reg.version}"
    else:
        head = reg.message or (
            f"{reg.name} version {reg.version} already holds this adapter: nothing registered"
        )
    aliases = ", ".join(info.get("aliases", [])) or "none"
    scores = {k[len("score.") :]: v for k, v in sorted(tags.items()) if k.startswith("score.")}
    lines = [
        head,
        f"  aliases  {aliases}",
        f"  verdict  {tags.get('verdict', 'unscored')}",
        f"  scores   {'  '.join(f'{k}={_num(v)}' for k, v in scores.items()) or 'none'}",
        f"  adapter  sha256 {reg.adapter_sha256[:12]}  run {reg.run_id}",
    ]
    if (level := tags.get("distribution")) is not None:
        blocked = requirements(tags, "client")
        why = f" ({'; '.join(blocked)})" if blocked and level == "internal" else ""
        lines.append(f"  distribution  {level}{why}")
    return "\n".join(lines)


def fetch_version(client: MlflowClient, name: str, ref: str) -> Any:
    """The ModelVersion of `name` that `ref` (a number or an alias) names; a UserError that
    lists what exists when there is none. The caller picks the workspace."""
    from mlflow.exceptions import MlflowException

    split_model_name(name)
    try:
        if ref.isdigit():
            return client.get_model_version(name, ref)
        return client.get_model_version_by_alias(name, ref)
    except MlflowException as e:
        if e.error_code == "PERMISSION_DENIED":
            raise UserError(
                f"permission denied on {name}: your MLflow user "
                f"({os.environ.get('MLFLOW_TRACKING_USERNAME', 'anonymous')}) has no access to "
                "this client's registry; ask the registry admin"
            ) from e
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        if not _model_exists(client, name):
            raise UserError(f"no registered model {name!r}: {known_models(client)}") from e
        how = (
            f"give a version that alias with `ltx-lora registry promote {name} VERSION`"
            if ref == "champion"
            else "register one with `ltx-lora register`"
        )
        raise UserError(
            f"{name} has no version or alias {ref!r}: {known_versions(client, name)}; {how}"
        ) from e


def known_models(client: MlflowClient) -> str:
    """A short list of the registered models this user can see, for error messages."""
    names = sorted(m.name for m in client.search_registered_models(max_results=50))
    return f"models here: {', '.join(names)}" if names else "no models are registered here"


def _model_exists(client: MlflowClient, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return False
    return True


def known_versions(client: MlflowClient, name: str) -> str:
    """A short list of what does exist, for the error message."""
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    if not versions:
        return "no versions are registered"
    shown = ", ".join(str(v) for v in versions[-10:])
    aliases = client.get_registered_model(name).aliases or {}
    alias_text = ", ".join(f"{a}→{v}" for a, v in sorted(aliases.items())) or "none"
    return f"versions {shown}; aliases {alias_text}"


def _num(value: str) -> str:
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value
