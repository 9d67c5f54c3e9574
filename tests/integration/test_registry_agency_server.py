"""Licence records, base-version checks and sync against the team server as it is: `mlflow
server` on PostgreSQL, basic auth, a workspace per client. A client's user can neither read nor
change another client's licence records, nor sync another client's adapters."""

from __future__ import annotations

import json

import pytest

from registry.licence import set_licence
from registry.promote import alias_history, promote
from registry.pull import pull
from registry.read import show
from registry.store import open_client
from registry.sync import MANIFEST, sync
from stagekit.errors import UserError
from stagekit.hashing import sha256_file
from tests.integration.test_registry_server import as_user, register, server  # noqa: F401

pytestmark = pytest.mark.timeout(240)


def test_licence_compat_and_sync_on_the_team_server(server, tmp_path):  # noqa: F811
    url = server["url"]
    as_user("acme")
    acme = register(url, "acme.mascot", tmp_path / "a", 1)
    client = open_client(url, experiment=None)
    assert show(client, "acme.mascot", str(acme.version))["licence"]["distribution"] == "client"
    promote(client, "acme.mascot", acme.version, actor="acme-lead")
    set_licence(
        client,
        "acme.mascot",
        acme.version,
        {"licence.base_agreement": "LT-812"},
        reason="agreement on file",
        actor="acme-lead",
    )
    assert [e.action for e in alias_history(client, "acme.mascot")] == ["promote", "licence"]
    with pytest.raises(UserError, match=r"not on LTX-2\.5"):
        pull(client, "acme.mascot", "champion", "comfyui", tmp_path / "x", base="2.5")

    loras = tmp_path / "acme-loras"
    result = sync(client, loras, client_slug="acme")
    assert result.written == ["acme.mascot.safetensors"] and not result.failed
    entry = json.loads((loras / MANIFEST).read_text())["files"]["acme.mascot.safetensors"]
    assert sha256_file(loras / "acme.mascot.safetensors") == entry["sha256"]
    assert not sync(client, loras, client_slug="acme").changed

    as_user("bravo")
    register(url, "bravo.logo", tmp_path / "b", 2)
    client = open_client(url, experiment=None)
    with pytest.raises(UserError, match=r"permission denied on acme\.mascot"):
        show(client, "acme.mascot", "champion")
    with pytest.raises(UserError, match=r"permission denied on acme\.mascot"):
        set_licence(client, "acme.mascot", acme.version, {"distribution": "public"}, reason="x")
    with pytest.raises(UserError, match="no client 'acme' visible to you"):
        sync(client, tmp_path / "stolen", client_slug="acme")
    assert not any((tmp_path / "stolen").glob("*.safetensors"))
    mine = sync(client, tmp_path / "bravo-all")  # no --client: all this user sees
    assert mine.written == [] and mine.skipped == {}  # bravo.logo has no champion yet

    as_user("acme")
    client = open_client(url, experiment=None)
    record = show(client, "acme.mascot", "champion")["licence"]
    assert record["distribution"] == "client" and record["base_agreement"] == "LT-812"
