"""Promotion, rollback, history, reading and verified pulls on a real MLflow (sqlite)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from ltx_lora.cli import main
from registry.promote import alias_history, promote, rollback
from registry.pull import DIFFUSERS_NAME, pull
from registry.read import compare, lineage, list_models, show
from registry.register import register_adapter
from registry.store import local_tracking_uri, open_client
from stagekit.errors import UserError
from stagekit.hashing import sha256_file
from tests.unit.test_registry_register import (
    CARD,
    LINEAGE,
    make_eval_dir,
    make_train_dir,
    shared_template_db,
)

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
NAME = "acme.mascot"
KEY = "fidelity_adapter"


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_template_db(tmp_path_factory)


@pytest.fixture
def client(tmp_path: Path, template_db: Path) -> Any:
    mlflow_dir = tmp_path / ".mlflow"
    mlflow_dir.mkdir()
    shutil.copy(template_db, mlflow_dir / "mlflow.db")
    return open_client(local_tracking_uri(mlflow_dir), mlflow_dir / "artifacts")


def add(client: Any, root: Path, seed: int, score: float | None, verdict: str = "pass") -> int:
    """Register one adapter scored `score` (None: no evaluation); its version number."""
    ev = None
    if score is not None:
        # The evaluator's metrics.json scores: adapter and base fidelity, the lift and its CI.
        lift = round(score - 0.3, 6)
        scores = {
            KEY: score,
            "fidelity_base": 0.3,
            "fidelity_lift": lift,
            "fidelity_lift_ci_low": round(lift - 0.05, 6),
            "fidelity_lift_ci_high": round(lift + 0.05, 6),
        }
        ev = make_eval_dir(root / f"e{seed}", verdict=verdict, scores=scores)
    reg = register_adapter(
        client,
        name=NAME,
        train_dir=make_train_dir(root / f"t{seed}", seed=seed),
        eval_dir=ev,
        experiment="ltx-lora",
        dataset_card=CARD,
    )
    return reg.version


def champion(client: Any) -> int | None:
    version = (client.get_registered_model(NAME).aliases or {}).get("champion")
    return None if version is None else int(version)


def test_promotion_is_gated_on_verdict_and_key_score(client, tmp_path):
    v1, v2, v3 = (add(client, tmp_path, s, x) for s, x in ((1, 0.40), (2, 0.35), (3, 0.40)))
    v4 = add(client, tmp_path, 4, 0.90, verdict="fail")

    first = promote(client, NAME, v1, actor="alice")
    assert (first.from_version, first.to_version, first.who) == (None, 1, "alice")
    with pytest.raises(UserError, match=r"0\.35 < champion version 1's 0\.4"):
        promote(client, NAME, v2)
    with pytest.raises(UserError, match="verdict 'fail', not 'pass'"):
        promote(client, NAME, v4)
    assert champion(client) == 1
    tie = promote(client, NAME, v3)  # "at least as well": an equal score is enough
    assert (tie.from_version, tie.to_version) == (1, 3) and champion(client) == 3
    assert promote(client, NAME, v3) is None  # already champion: nothing moves or is recorded
    assert len(alias_history(client, NAME)) == 2


def test_force_needs_a_reason_and_records_it(client, tmp_path):
    v1, v2 = add(client, tmp_path, 1, 0.5), add(client, tmp_path, 2, None)
    promote(client, NAME, v1)
    with pytest.raises(UserError, match="verdict 'unscored'"):
        promote(client, NAME, v2)
    with pytest.raises(UserError, match="--force needs --reason"):
        promote(client, NAME, v2, force=True)
    event = promote(client, NAME, v2, force=True, reason="client sign-off #812", actor="bob")
    assert event.action == "force-promote" and champion(client) == v2
    assert event.why.startswith("client sign-off #812 (forced; verdict unscored")


def test_scores_from_another_suite_do_not_compare(client, tmp_path):
    v1 = add(client, tmp_path, 1, 0.5)
    promote(client, NAME, v1)
    other = make_eval_dir(tmp_path / "e-other", scores={KEY: 0.9})
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps(metrics | {"backend": "clip-vit-l"}))
    v2 = register_adapter(
        client,
        name=NAME,
        train_dir=make_train_dir(tmp_path / "t-other", seed=9),
        eval_dir=other,
        experiment="ltx-lora",
        dataset_card=CARD,
    ).version
    with pytest.raises(UserError, match="do not compare"):
        promote(client, NAME, v2)
    assert champion(client) == v1


def test_rollback_walks_back_the_chain_and_history_records_every_move(client, tmp_path):
    versions = [add(client, tmp_path, s, 0.1 * s) for s in (1, 2, 3)]
    for v in versions:
        promote(client, NAME, v, actor="carol")
    with pytest.raises(UserError):
        rollback(client, "acme.unknown")

    back = rollback(client, NAME, reason="flicker", actor="dave")
    assert (back.action, back.from_version, back.to_version) == ("rollback", 3, 2)
    assert rollback(client, NAME).to_version == 1 and champion(client) == 1
    with pytest.raises(UserError, match="first champion"):
        rollback(client, NAME)

    moves = [(e.action, e.from_version, e.to_version) for e in alias_history(client, NAME)]
    assert moves == [
        ("promote", None, 1),
        ("promote", 1, 2),
        ("promote", 2, 3),
        ("rollback", 3, 2),
        ("rollback", 2, 1),
    ]
    events = alias_history(client, NAME)
    assert events[3].who == "dave" and events[3].why == "flicker"
    assert all(e.when.endswith("Z") and e.alias == "champion" for e in events)
    # durable: the record is in MLflow itself, readable by any other client
    tags = client.get_registered_model(NAME).tags
    assert sum(k.startswith("audit.") for k in tags) == 5


def test_list_show_compare_lineage(client, tmp_path):
    v1 = add(client, tmp_path, 1, 0.4)
    add(client, tmp_path, 2, 0.6)
    promote(client, NAME, v1)

    rows = list_models(client)
    assert rows == [
        {
            "name": NAME,
            "client": "acme",
            "adapter": "mascot",
            "versions": 2,
            "latest": 2,
            "aliases": {"candidate": 2, "champion": 1},
        }
    ]
    assert list_models(client, "acme") == rows
    with pytest.raises(UserError, match="no client 'bravo': clients here: acme"):
        list_models(client, "bravo")

    info = show(client, NAME, "champion")
    assert (info["version"], info["aliases"], info["verdict"]) == (1, ["champion"], "pass")
    assert info["scores"] == {
        KEY: 0.4,
        "fidelity_base": 0.3,
        "fidelity_lift": 0.1,
        "fidelity_lift_ci_low": 0.05,
        "fidelity_lift_ci_high": 0.15,
    }
    assert info["intervals"] == {"fidelity_lift": (0.05, 0.15)}
    assert info["lineage"]["git_commit"] == LINEAGE["git_commit"]
    assert set(info["files"]) == {"adapter.safetensors", "comfyui.safetensors"}
    assert info["files"]["adapter.safetensors"]["sha256"] == info["adapter_sha256"]

    diff = compare(client, (NAME, "1"), (NAME, "candidate"))
    assert diff["scores"][KEY] == (0.4, 0.6) and diff["same_suite"]
    assert diff["intervals"] == {"fidelity_lift": ((0.05, 0.15), (0.25, 0.35))}
    # Same data, code and base model; only the scores moved.
    assert diff["differs"] == [
        KEY,
        "fidelity_lift",
        "fidelity_lift_ci_high",
        "fidelity_lift_ci_low",
    ]

    lin = lineage(client, NAME, "2")
    assert lin["data"]["dataset_hash"] == LINEAGE["dataset_hash"]
    assert lin["data"]["inputs"][0]["digest"] == LINEAGE["dataset_hash"][:36]
    assert lin["base model"]["base_model_hash"] == LINEAGE["base_model_hash"]
    assert lin["code"]["config_hash"] == LINEAGE["config_hash"]

    for bad, words in (("acme.nope", "models here: acme.mascot"), (NAME, "versions 1, 2")):
        with pytest.raises(UserError, match=words):
            show(client, bad, "gold")


def test_pull_verifies_and_writes_atomically(client, tmp_path):
    v1 = add(client, tmp_path, 1, 0.5)
    promote(client, NAME, v1)
    dest = tmp_path / "loras"

    got = pull(client, NAME, "champion", "comfyui", dest)
    assert got.path == dest / f"{NAME}.safetensors" and got.version == 1
    assert sha256_file(got.path) == sha256_file(tmp_path / "t1/adapter/comfyui.safetensors")
    record = json.loads(got.record.read_text())
    assert (record["version"], record["sha256"]) == (1, got.sha256)
    diff = pull(client, NAME, "1", "diffusers", tmp_path / "diffusers")
    assert diff.path.name == DIFFUSERS_NAME
    with pytest.raises(UserError, match=r"has no adapter_ema\.safetensors"):
        pull(client, NAME, "1", "diffusers", tmp_path / "x", ema=True)


@pytest.mark.parametrize("damage", ["tamper", "truncate"])
def test_pull_refuses_a_damaged_artifact_and_keeps_the_old_file(client, tmp_path, damage):
    v1 = add(client, tmp_path, 1, 0.5)
    dest = tmp_path / "loras"
    good = pull(client, NAME, str(v1), "comfyui", dest)
    before = good.path.read_bytes()

    run = client.get_model_version(NAME, str(v1)).run_id
    stored = next((tmp_path / ".mlflow" / "artifacts").rglob(f"{run}/artifacts/adapter/comfyui*"))
    data = bytearray(stored.read_bytes())
    if damage == "tamper":
        data[-1] ^= 0xFF
        message = "stored file was altered"
    else:
        data = data[: len(data) // 2]
        message = "bytes, registered as"
    stored.write_bytes(bytes(data))

    with pytest.raises(UserError, match=message):
        pull(client, NAME, str(v1), "comfyui", dest)
    assert good.path.read_bytes() == before  # the earlier pull is untouched
    assert sorted(p.name for p in dest.iterdir()) == [f"{NAME}.pull.json", f"{NAME}.safetensors"]


def test_an_adapter_without_metadata_is_refused(client, tmp_path):
    from safetensors.numpy import save_file

    train = make_train_dir(tmp_path / "t")
    tensors = {"a.lora_A.weight": __import__("numpy").ones((2, 2), "float32")}
    save_file(tensors, train / "adapter" / "adapter.safetensors")
    with pytest.raises(UserError, match="no metadata header naming its base_model"):
        register_adapter(client, name=NAME, train_dir=train, eval_dir=None, experiment="x")
    assert client.search_registered_models() == []


def test_cli_verbs_end_to_end(client, tmp_path, capsys):
    v1, v2 = add(client, tmp_path, 1, 0.4), add(client, tmp_path, 2, 0.3)
    ws = ["--workspace", str(tmp_path)]

    assert main([*ws, "registry", "promote", NAME, str(v1), "--actor", "erin"]) == 0
    assert main([*ws, "registry", "promote", NAME, str(v2)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ltx-lora registry promote: error:") and len(err.splitlines()) == 1
    assert main([*ws, "registry", "history", NAME, "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [(e["who"], e["to_version"]) for e in events] == [("erin", 1)]
    assert main([*ws, "registry", "list", "--client", "acme"]) == 0
    assert "acme.mascot" in capsys.readouterr().out
    assert main([*ws, "registry", "show", f"{NAME}@champion"]) == 0
    shown = capsys.readouterr().out
    assert "fidelity_lift = 0.1 [0.05, 0.15]" in shown and "_ci_low" not in shown
    assert main([*ws, "registry", "compare", f"{NAME}@1", "@2"]) == 0
    compared = capsys.readouterr().out
    assert "0.1 [0.05, 0.15]" in compared
    assert "0 [-0.05, 0.05]" in compared and "_ci_high" not in compared
    assert main([*ws, "registry", "show", f"{NAME}@gold"]) == 1
    assert "aliases candidate→2, champion→1" in capsys.readouterr().err
    out = tmp_path / "pulled"
    assert main([*ws, "pull", f"{NAME}@champion", "--format", "comfyui", "--to", str(out)]) == 0
    assert (out / f"{NAME}.safetensors").is_file()
    assert main(["--workspace", str(tmp_path / "empty"), "registry", "list"]) == 1
    assert "no registry at" in capsys.readouterr().err
