"""The team server's write rule: a registered version's files and record are immutable.

MLflow's basic-auth lets a user who may edit a run upload over its artifacts, so a client's own
user could swap the bytes of its champion; one who may edit a model may rewrite its versions'
tags, among them the `file.<name>` hashes pulls check against and the lineage. This is the
server's `authorization_function` (registry.server.AUTH_INI): it authenticates like MLflow's
basic auth, then refuses (HTTP 403), unless the user is an admin, any upload, multipart upload
or delete under a run that a live model version points at, and any set or delete of a version
tag it was registered with (`registry.names.is_record_tag`). Runs in the server process
(Flask); nothing here runs on a client.
"""

from __future__ import annotations

import json
import re
from typing import Any

# /api/2.0/mlflow-artifacts/artifacts/<path>, /ajax-api/… and the multipart routes (mpu/…)
_ARTIFACT_WRITE = re.compile(r"/mlflow-artifacts/(artifacts|mpu/[a-z]+)/(?P<path>.+)$")
_RUN_DIR = re.compile(r"(?:^|/)(?P<run>[0-9a-f]{32})/artifacts(?:/|$)")
_WRITES = {"PUT", "POST", "DELETE", "PATCH"}
# /api/2.0/mlflow/model-versions/set-tag and …/delete-tag (and their /ajax-api/ twins)
_TAG_WRITE = re.compile(r"/mlflow/model-versions/(set|delete)-tag$")


def authenticate() -> Any:
    """MLflow's basic-auth check, then the immutability rule; an Authorization or a Response."""
    from flask import request
    from mlflow.server.auth import authenticate_request_basic_auth
    from werkzeug.datastructures import Authorization

    result = authenticate_request_basic_auth()
    if not isinstance(result, Authorization) or request.method not in _WRITES:
        return result
    if _TAG_WRITE.search(request.path):  # only these requests' bodies are read here
        tag = record_tag(request.get_json(silent=True) or request.args)
        if tag is not None and not _is_admin(result.username):
            return _refused_tag(result.username, tag)
    run_id = written_run(request.path)
    if run_id is None or _is_admin(result.username) or not _registered(run_id):
        return result
    return _forbidden(result.username, request.method, run_id)


def record_tag(body: Any) -> str | None:
    """The registered-with tag a version-tag set or delete (`body`: its JSON or query) would
    change, or None."""
    from registry.names import is_record_tag

    key = str(body.get("key") or "") if hasattr(body, "get") else ""
    return key if is_record_tag(key) else None


def written_run(path: str) -> str | None:
    """The run id whose artifacts a write to `path` would change, or None."""
    found = _ARTIFACT_WRITE.search(path)
    run = _RUN_DIR.search(found.group("path")) if found else None
    return run.group("run") if run else None


def _is_admin(username: str | None) -> bool:
    from mlflow.server.auth import store

    return bool(username) and store.get_user(username).is_admin


def _registered(run_id: str) -> bool:
    """True when a model version that is not deleted points at `run_id` (any workspace)."""
    from mlflow.server.handlers import _get_model_registry_store
    from sqlalchemy import text

    engine = _get_model_registry_store().engine
    query = text(
        "SELECT 1 FROM model_versions WHERE run_id = :run "
        "AND current_stage != 'Deleted_Internal' LIMIT 1"
    )
    with engine.connect() as conn:
        return conn.execute(query, {"run": run_id}).first() is not None


def _forbidden(user: str | None, method: str, run_id: str) -> Any:
    return _denied(
        f"{method} refused for user {user!r}: run {run_id} holds a registered model version, "
        "whose files are immutable (only an admin may change them); register a new version"
    )


def _refused_tag(user: str | None, key: str) -> Any:
    return _denied(
        f"tag {key!r} refused for user {user!r}: a version's files, lineage, verdict and "
        "scores are the record it was registered with, immutable (only an admin may change "
        "them); register a new version"
    )


def _denied(message: str) -> Any:
    from flask import Response

    body = {"error_code": "PERMISSION_DENIED", "message": message}
    return Response(json.dumps(body), status=403, mimetype="application/json")
