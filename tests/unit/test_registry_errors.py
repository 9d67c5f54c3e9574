"""registry.errors: which failures become one-line UserErrors, and what each line names. The
real server and a real full disk are in tests/integration/test_registry_*faults.py; these pin the
mapping, including requests' errors, which are OSErrors and must not pass as I/O errors."""

from __future__ import annotations

import errno

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, PERMISSION_DENIED, UNAUTHENTICATED

from registry.errors import one_line_errors
from stagekit.errors import DiskFullError, UserError

URI = "sqlite:////srv/ws/.mlflow/mlflow.db"


def converted(error: Exception, uri: str = URI) -> UserError:
    with (
        pytest.raises(UserError) as got,
        one_line_errors("registry history acme.mascot", uri, "acme"),
    ):
        raise error
    assert "\n" not in str(got.value)
    return got.value


def _response(status: int) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    return response


def test_refusals_name_the_user_the_action_and_the_client(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bravo-bot")
    for error in (
        MlflowException("permission denied", error_code=PERMISSION_DENIED),
        MlflowException("API request to endpoint /x failed with error code 403 != 200"),
        requests.exceptions.HTTPError("403 Client Error: Forbidden", response=_response(403)),
    ):
        text = str(converted(error))
        assert "refused registry history acme.mascot to user 'bravo-bot'" in text
        assert "client 'acme'" in text and "403" in text
    for unauthenticated in (
        MlflowException("bad password", error_code=UNAUTHENTICATED),
        MlflowException("API request to endpoint /x failed with error code 401 != 200"),
    ):
        assert "did not accept user 'bravo-bot'" in str(converted(unauthenticated))


def test_an_unreachable_server_names_its_url():
    down = requests.exceptions.ConnectionError("Max retries exceeded: Connection refused")
    assert "cannot reach the MLflow server at http://10.0.0.9:5000" in str(
        converted(down, "http://10.0.0.9:5000")
    )
    local = one_line_errors("pull of acme.mascot", URI)  # a local store has no server to reach
    with pytest.raises(requests.exceptions.ConnectionError), local:
        raise down


def test_a_full_disk_names_the_path_or_the_store_and_the_free_space():
    named = converted(OSError(errno.ENOSPC, "No space left on device", "/srv/out/a.safetensors"))
    assert isinstance(named, DiskFullError) and named.path == "/srv/out/a.safetensors"
    unnamed = converted(OSError(errno.ENOSPC, "No space left on device"))
    assert unnamed.path == "/srv/ws/.mlflow" and "free there" in str(unnamed)
    sqlite = converted(MlflowException("(sqlite3.OperationalError) database or disk is full"))
    assert isinstance(sqlite, DiskFullError) and sqlite.path == "/srv/ws/.mlflow/mlflow.db"


def test_other_errors_pass_unchanged():
    for error in (
        ValueError("a bug"),
        OSError(errno.EACCES, "Permission denied"),
        MlflowException("boom", error_code=INTERNAL_ERROR),
        requests.exceptions.HTTPError("500 Server Error", response=_response(500)),
        ConnectionError("connection reset"),  # the builtin: not a server out of reach
    ):
        with pytest.raises(type(error)) as got, one_line_errors("pull of acme.mascot", URI):
            raise error
        assert got.value is error
