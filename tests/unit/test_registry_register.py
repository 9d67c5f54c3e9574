"""register_adapter on a real MLflow (sqlite in tmp_path): tags, alias, artifacts, idempotency."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from registry.describe import describe_version, format_registration
from registry.pull import pull
from registry.register import LINEAGE_TAGS, register_adapter
from registry.store import ensure_schema, local_tracking_uri, open_client
from stagekit.errors import UserError
from stagekit.hashing import sha256_file

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

NAME = "acme.mascot"
LINEAGE = {
    "dataset_hash": "d" * 32,
    "base_model": "ltx2-tiny",
    "base_model_hash": "b" * 64,
    "config_hash": "c" * 64,
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "ltx_version": "2.0",
}
SCORES = {"clip_t": 0.3125, "dino": 0.70125}
CARD = {
    "client": "acme",
    "adapter": "mascot",
    "trigger": "zorblat",
    "class_noun": "mascot",
    "owner": "Acme Brand Team",
    "rights": "licensed for training",
    "settings": {},
}


def make_train_dir(root: Path, seed: int = 0, steps: int = 5) -> Path:
    """A trainer output folder: two adapter layouts, train.json, metrics.jsonl, config.yaml."""
    rng = np.random.default_rng(seed)
    lora = {
        "lora_A.weight": rng.standard_normal((4, 16)),
        "lora_B.weight": rng.standard_normal((16, 4)) * 0.01,  # trained: not all zero (scan)
    }
    adapter = root / "adapter"
    adapter.mkdir(parents=True)
    meta = {"base_model": LINEAGE["base_model"], "rank": "4"}
    peft = {f"transformer.blocks.0.attn1.to_q.{k}": v.astype(np.float32) for k, v in lora.items()}
    comfy = {
        f"diffusion_model.blocks.0.attn1.to_q.{k}": v.astype(np.float32) for k, v in lora.items()
    }
    save_file(peft, adapter / "adapter.safetensors", metadata=meta)
    save_file(comfy, adapter / "comfyui.safetensors", metadata=meta)
    record = {
        "run_name": f"mascot-r4-s{seed}",
        "lineage": LINEAGE,
        "params": {"rank": 4, "alpha": 4, "lr": 1e-4, "steps": steps, "targets": "to_q"},
        "final": {"loss": 0.25},
    }
    (root / "train.json").write_text(json.dumps(record))
    rows = [{"step": i, "loss": 1.0 / (i + 1), "lr": 1e-4, "note": "x"} for i in range(steps)]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "config.yaml").write_text("lora:\n  rank: 4\n")
    return root


def make_eval_dir(root: Path, verdict: str = "pass", scores: dict | None = None) -> Path:
    (root / "samples").mkdir(parents=True)
    metrics = {"verdict": verdict, "scores": SCORES if scores is None else scores, "n": 2}
    metrics["adapter_strength"] = 0.8  # what the evaluation rendered and scored it at
    (root / "metrics.json").write_text(json.dumps(metrics))
    (root / "report.html").write_text("<html><body>report</body></html>")
    (root / "samples" / "prompt0.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    return root


_TEMPLATE: list[Path] = []  # the one schema of this test session, shared with other modules


def shared_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh registry schema made once per session and copied per test: creating it costs
    seconds, a copy nothing. The registry test modules import this to share it."""
    if not _TEMPLATE:
        mlflow_dir = tmp_path_factory.mktemp("template") / ".mlflow"
        ensure_schema(local_tracking_uri(mlflow_dir))
        _TEMPLATE.append(mlflow_dir / "mlflow.db")
    return _TEMPLATE[0]


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_template_db(tmp_path_factory)


@pytest.fixture
def client(tmp_path: Path, template_db: Path) -> Any:
    mlflow_dir = tmp_path / ".mlflow"
    mlflow_dir.mkdir()
    shutil.copy(template_db, mlflow_dir / "mlflow.db")
    return open_client(local_tracking_uri(mlflow_dir), mlflow_dir / "artifacts")


def register(client: Any, train_dir: Path, eval_dir: Path | None = None, **kw: Any) -> Any:
    kw.setdefault("dataset_card", CARD)
    return register_adapter(
        client, name=NAME, train_dir=train_dir, eval_dir=eval_dir, experiment="ltx-lora", **kw
    )


def all_artifacts(client: Any, run_id: str, path: str | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in client.list_artifacts(run_id, path):
        out |= all_artifacts(client, run_id, f.path) if f.is_dir else {f.path: f.file_size}
    return out


def test_register_creates_version_with_tags_alias_and_artifacts(client, tmp_path):
    train = make_train_dir(tmp_path / "train")
    ev = make_eval_dir(tmp_path / "eval")
    reg = register(client, train, ev)

    assert (reg.name, reg.version, reg.alias, reg.created) == (NAME, 1, "candidate", True)
    assert reg.adapter_sha256 == sha256_file(train / "adapter" / "adapter.safetensors")
    mv = client.get_model_version_by_alias(NAME, "candidate")
    assert int(mv.version) == 1 and mv.run_id == reg.run_id
    expected = {k: LINEAGE[k] for k in LINEAGE_TAGS} | {
        "run_id": reg.run_id,
        "adapter_sha256": reg.adapter_sha256,
        "verdict": "pass",
        "score.clip_t": "0.3125",
        "score.dino": "0.70125",
        "trigger": "zorblat",
        "adapter_strength": "0.8",
    }
    assert {k: mv.tags.get(k) for k in expected} == expected
    for words in ("ltx2-tiny", "verdict pass", "clip_t 0.3125", "zorblat", "Acme Brand Team"):
        assert words in mv.description
    assert mv.source.startswith("file://") and mv.source.endswith(
        f"/{reg.run_id}/artifacts/adapter"
    )

    files = all_artifacts(client, reg.run_id)
    assert set(files) == {
        "adapter/adapter.safetensors",
        "adapter/comfyui.safetensors",
        "adapter/files.json",
        "train.json",
        "config.yaml",
        "dataset_card.json",
        "eval/metrics.json",
        "eval/report.html",
        "eval/samples/prompt0.mp4",
    }
    assert (
        files["adapter/adapter.safetensors"]
        == (train / "adapter/adapter.safetensors").stat().st_size
    )


def test_files_json_matches_the_uploaded_files(client, tmp_path):
    train = make_train_dir(tmp_path / "train")
    reg = register(client, train)
    dst = Path(client.download_artifacts(reg.run_id, "adapter", str(tmp_path / "pulled")))
    manifest = json.loads((dst / "files.json").read_text())

    assert set(manifest) == {"adapter.safetensors", "comfyui.safetensors"}
    for rel, entry in manifest.items():
        assert entry["sha256"] == sha256_file(dst / rel) == sha256_file(train / "adapter" / rel)
        assert entry["bytes"] == (dst / rel).stat().st_size
    assert manifest["adapter.safetensors"]["sha256"] == reg.adapter_sha256


def test_run_holds_params_step_metrics_and_scores(client, tmp_path):
    reg = register(
        client, make_train_dir(tmp_path / "train", steps=7), make_eval_dir(tmp_path / "e")
    )
    run = client.get_run(reg.run_id)

    assert run.info.status == "FINISHED" and run.info.run_name == "mascot-r4-s0"
    assert run.data.params["rank"] == "4" and run.data.params["targets"] == "to_q"
    history = client.get_metric_history(reg.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(7))
    assert run.data.metrics["final.loss"] == 0.25
    assert run.data.metrics["score.dino"] == pytest.approx(0.70125)
    assert "note" not in run.data.metrics  # non-numeric fields of metrics.jsonl are skipped
    assert run.data.tags["dataset_hash"] == LINEAGE["dataset_hash"]


def test_registering_again_returns_the_same_version_and_creates_nothing(client, tmp_path):
    train = make_train_dir(tmp_path / "train")
    first = register(client, train, make_eval_dir(tmp_path / "eval"))
    again = register(client, train, make_eval_dir(tmp_path / "eval2", verdict="fail"))

    assert again.created is False
    assert (again.version, again.run_id, again.alias) == (first.version, first.run_id, "candidate")
    assert again.message.startswith(f"refused as a duplicate: {NAME} version 1 (candidate)")
    assert "same weights and lineage" in again.message and "nothing registered" in again.message
    assert format_registration(again, {}).splitlines()[0] == again.message
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1
    exp = client.get_experiment_by_name("ltx-lora")
    assert len(client.search_runs([exp.experiment_id])) == 1


def test_a_new_adapter_gets_version_2_and_the_alias_moves(client, tmp_path):
    v1 = register(client, make_train_dir(tmp_path / "t1", seed=1))
    v2 = register(client, make_train_dir(tmp_path / "t2", seed=2))

    assert (v1.version, v2.version) == (1, 2) and v2.created
    assert int(client.get_model_version_by_alias(NAME, "candidate").version) == 2
    assert client.get_model_version(NAME, "1").aliases == []
    # Re-registering the first adapter finds version 1 and leaves the alias on version 2.
    back = register(client, tmp_path / "t1")
    assert (back.version, back.created, back.alias) == (1, False, None)
    assert int(client.get_model_version_by_alias(NAME, "candidate").version) == 2


def test_digests_recorded_by_training_are_reused_unless_the_file_changed(
    client, tmp_path, monkeypatch
):
    import registry.inputs

    train = make_train_dir(tmp_path / "train")
    adapter = train / "adapter"
    real = {f.name: sha256_file(f) for f in adapter.iterdir()}
    record = json.loads((train / "train.json").read_text())
    time.sleep(0.02)  # training writes train.json after the files, never in the same tick
    (train / "train.json").write_text(json.dumps(record | {"files": real}))
    hashed: list[str] = []
    real_hash = registry.inputs.hash_files
    monkeypatch.setattr(
        registry.inputs, "hash_files", lambda ps: hashed.extend(p.name for p in ps) or real_hash(ps)
    )
    first = register(client, train)
    assert first.adapter_sha256 == real["adapter.safetensors"] and hashed == []

    # The ComfyUI file replaced after training: train.json's digest no longer holds, so the
    # registry hashes that file (and only it) and the pull of the new bytes verifies.
    time.sleep(0.02)
    make_train_dir(tmp_path / "other", seed=5)
    shutil.copy(tmp_path / "other/adapter/comfyui.safetensors", adapter / "comfyui.safetensors")
    client.delete_model_version(NAME, "1")
    again = register(client, train)
    assert hashed == ["comfyui.safetensors"]
    pulled = pull(client, NAME, str(again.version), "comfyui", tmp_path / "out")
    assert (
        pulled.sha256 == sha256_file(adapter / "comfyui.safetensors") != real["comfyui.safetensors"]
    )


def test_without_evaluation_the_version_is_unscored(client, tmp_path):
    reg = register(client, make_train_dir(tmp_path / "train"), tmp_path / "no-eval-here")
    info = describe_version(client, NAME, "candidate")

    assert info["tags"]["verdict"] == "unscored"
    assert not any(k.startswith("score.") for k in info["tags"])
    assert not any(p.startswith("eval/") for p in all_artifacts(client, reg.run_id))
    assert "Evaluation: none" in info["description"]


def test_describe_and_format(client, tmp_path):
    reg = register(client, make_train_dir(tmp_path / "train"), make_eval_dir(tmp_path / "eval"))
    by_alias = describe_version(client, NAME, "candidate")
    by_number = describe_version(client, NAME, "1")

    assert by_alias == by_number
    assert by_alias["aliases"] == ["candidate"] and by_alias["run_id"] == reg.run_id
    assert by_alias["source"].endswith("/adapter")
    text = format_registration(reg, by_alias)
    for words in (f"registered {NAME} version 1", "candidate", "pass", "clip_t=0.3125", "dino"):
        assert words in text
    assert len(text.splitlines()) <= 6
    # no champion yet: the way to one is promotion, not another registration
    with pytest.raises(UserError, match=r"no version or alias 'champion'.*versions 1.*promote"):
        describe_version(client, NAME, "champion")
    with pytest.raises(UserError, match=r"no version or alias '7'.*`ltx-lora register`"):
        describe_version(client, NAME, "7")


# --- bad inputs fail before anything is made; a failure part-way leaves nothing half-made ---


def assert_nothing_registered(client: Any) -> None:
    assert client.search_registered_models() == []
    exp = client.get_experiment_by_name("ltx-lora")
    assert (
        client.search_runs([exp.experiment_id]) == []
    )  # active runs only: failed ones are deleted


def run_folders(mlflow_dir: Path) -> list[Path]:
    """Run folders under the artifact root that still hold files."""
    root = mlflow_dir / "artifacts" / "ltx-lora"
    return [p for p in root.glob("*") if any(f.is_file() for f in p.rglob("*"))]


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (
            lambda t: (t / "adapter" / "adapter.safetensors").unlink(),
            r"adapter\.safetensors is missing",
        ),
        (lambda t: (t / "train.json").unlink(), r"train\.json is missing"),
        (lambda t: (t / "adapter" / "adapter.safetensors").write_text("{}"), "not a safetensors"),
        (
            lambda t: (t / "train.json").write_text(json.dumps({"run_name": "x", "lineage": {}})),
            r"train\.json: lineage\.dataset_hash: Field required",
        ),
        (lambda t: (t / "metrics.jsonl").write_text('{"loss": 1}\n'), r"line 1: needs an integer"),
    ],
)
def test_bad_training_inputs_name_the_file_and_make_nothing(client, tmp_path, break_it, message):
    train = make_train_dir(tmp_path / "train")
    break_it(train)
    with pytest.raises(UserError, match=message):
        register(client, train)
    assert_nothing_registered(client)


def test_bad_eval_and_names_are_user_errors(client, tmp_path):
    train = make_train_dir(tmp_path / "train")
    ev = make_eval_dir(tmp_path / "eval", verdict="maybe")
    with pytest.raises(UserError, match=r"metrics\.json: verdict"):
        register(client, train, ev)
    (ev / "metrics.json").unlink()
    with pytest.raises(UserError, match=r"metrics\.json is missing"):
        register(client, train, ev)
    for bad in ("acme", "Acme.Mascot", "acme.mascot.v2", "acme/x.y", "-acme.x"):
        with pytest.raises(UserError, match=r"is not <client>\.<adapter>"):
            register_adapter(client, name=bad, train_dir=train, eval_dir=None, experiment="x")
    with pytest.raises(UserError, match="reserved"):
        register(client, train, alias="latest")
    assert_nothing_registered(client)


@pytest.mark.parametrize(
    "failing", ["create_model_version", "set_registered_model_alias", "set_terminated"]
)
def test_a_failure_part_way_leaves_no_model_and_no_files(client, tmp_path, monkeypatch, failing):
    """A real client whose one call fails (a server outage, say): everything made is removed."""

    def outage(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError(f"{failing}: connection reset")

    train = make_train_dir(tmp_path / "train")
    monkeypatch.setattr(client, failing, outage)
    with pytest.raises(ConnectionError):
        register(client, train, make_eval_dir(tmp_path / "eval"))
    monkeypatch.undo()

    assert_nothing_registered(client)
    assert run_folders(tmp_path / ".mlflow") == []
    deleted = client.search_runs(
        [client.get_experiment_by_name("ltx-lora").experiment_id], run_view_type=2
    )
    assert len(deleted) == 1  # the failed run is kept, soft-deleted, for a post-mortem
    # ...and a retry once the outage is over registers normally, as version 1.
    assert register(client, train).version == 1


def test_a_failure_on_version_2_keeps_version_1_and_its_alias(client, tmp_path, monkeypatch):
    register(client, make_train_dir(tmp_path / "t1", seed=1))

    def outage(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("alias: connection reset")

    monkeypatch.setattr(client, "set_registered_model_alias", outage)
    with pytest.raises(ConnectionError):
        register(client, make_train_dir(tmp_path / "t2", seed=2))
    monkeypatch.undo()

    assert [int(v.version) for v in client.search_model_versions(f"name = '{NAME}'")] == [1]
    assert int(client.get_model_version_by_alias(NAME, "candidate").version) == 1


def test_an_upload_that_fails_for_real_leaves_nothing(tmp_path, template_db):
    """The artifact root is a file, so the upload itself fails (no monkeypatching)."""
    mlflow_dir = tmp_path / ".mlflow"
    mlflow_dir.mkdir()
    shutil.copy(template_db, mlflow_dir / "mlflow.db")
    (tmp_path / "blocked").write_text("a file where the artifact folder should be")
    client = open_client(local_tracking_uri(mlflow_dir), tmp_path / "blocked")

    with pytest.raises(OSError):
        register(client, make_train_dir(tmp_path / "train"))
    assert_nothing_registered(client)


def test_a_dataset_input_that_collides_with_a_concurrent_insert_is_retried(
    client, tmp_path, monkeypatch
):
    """The server inserts a dataset row by look-up-then-insert: two runs of the same data at
    once can both insert, and one gets PostgreSQL's unique violation (seen on CI). That one
    retries, finds the row and registers; any other error, or endless collisions, still fail."""
    from mlflow.exceptions import MlflowException

    import registry.register as reg_mod

    unique = MlflowException(
        "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
        '"dataset_pk"'
    )
    real = type(client).log_inputs
    calls: list[str] = []

    def flaky(self, run_id, datasets=None, **kw):
        calls.append(run_id)
        if len(calls) == 1:
            real(self, run_id, datasets=datasets, **kw)  # the other process's insert landed
            raise unique
        return real(self, run_id, datasets=datasets, **kw)

    monkeypatch.setattr(type(client), "log_inputs", flaky)
    monkeypatch.setattr(reg_mod.time, "sleep", lambda s: None)
    reg = register(client, make_train_dir(tmp_path / "train"))
    assert reg.created and len(calls) == 2
    inputs = client.get_run(reg.run_id).inputs.dataset_inputs
    assert [d.dataset.digest for d in inputs] == [LINEAGE["dataset_hash"][:36]]

    # Collisions that never end: bounded attempts, then the error, and nothing half-made.
    def always(self, *a, **k):
        calls.append("again")
        raise unique

    monkeypatch.setattr(type(client), "log_inputs", always)
    calls.clear()
    with pytest.raises(MlflowException, match="unique constraint"):
        register(client, make_train_dir(tmp_path / "t2", seed=2))
    assert len(calls) == reg_mod.VERSION_ATTEMPTS
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1
    # Any other error is not retried.
    attempts: list[int] = []

    def broken(self, *a, **k):
        attempts.append(1)
        raise MlflowException("INTERNAL: disk full", error_code="INTERNAL_ERROR")

    monkeypatch.setattr(type(client), "log_inputs", broken)
    with pytest.raises(MlflowException, match="disk full"):
        register(client, make_train_dir(tmp_path / "t3", seed=3))
    assert attempts == [1]


@pytest.mark.parametrize(
    "failure",
    [
        ("alias handler failed", "INTERNAL_ERROR"),
        # two registrations upserting the alias at once (seen on PostgreSQL)
        (
            "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
            '"registered_model_alias_pk"',
            "BAD_REQUEST",
        ),
    ],
)
def test_an_alias_the_server_fails_to_set_once_is_set_on_retry(
    client, tmp_path, monkeypatch, failure
):
    from mlflow.exceptions import MlflowException

    import registry.register as reg_mod

    real, calls = client.set_registered_model_alias, []

    def hiccup(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise MlflowException(failure[0], error_code=failure[1])
        real(*args)

    monkeypatch.setattr(client, "set_registered_model_alias", hiccup)
    monkeypatch.setattr(reg_mod.time, "sleep", lambda s: None)
    reg = register(client, make_train_dir(tmp_path / "train"))
    assert (reg.version, reg.alias, len(calls)) == (1, "candidate", 2)
    assert int(client.get_model_version_by_alias(NAME, "candidate").version) == 1


@pytest.mark.parametrize("link", [False, True])
def test_a_local_store_copies_the_adapter_unless_linking_is_asked_for(
    client, tmp_path, monkeypatch, link
):
    from registry.register import LINK_ENV

    monkeypatch.setenv(LINK_ENV, "1" if link else "0")
    train = make_train_dir(tmp_path / "train")
    reg = register(client, train)
    run_dir = next((tmp_path / ".mlflow" / "artifacts").rglob(f"{reg.run_id}/artifacts"))
    for name in ("adapter.safetensors", "comfyui.safetensors"):
        stored, source = run_dir / "adapter" / name, train / "adapter" / name
        assert stored.read_bytes() == source.read_bytes()
        assert stored.samefile(source) is link
    # train.json and config.yaml are always copies: people edit those in place.
    assert not (run_dir / "train.json").samefile(train / "train.json")
    assert pull(client, NAME, "candidate", "comfyui", tmp_path / "out").version == 1


# what the registry writes after registration: licence, compatibility, archive
LATER_TAGS = ("rights.", "licence.", "tested.", "distribution", "archived")


def test_every_tag_registration_writes_is_record_but_the_later_records(client, tmp_path):
    """`registry.names.is_record_tag` (what the team server lets only an admin change) names
    every tag a real registration writes except those the registry's later commands rewrite."""
    from registry.names import is_record_tag

    reg = register(client, make_train_dir(tmp_path / "t"), make_eval_dir(tmp_path / "e"))
    tags = dict(client.get_model_version(NAME, str(reg.version)).tags)
    assert {"dataset_hash", "verdict", "adapter_sha256", "run_id"} <= set(tags)
    files = {k for k in tags if k.startswith("file.")}
    assert files == {"file.adapter.safetensors", "file.comfyui.safetensors"}
    later = {k for k in tags if k.startswith(LATER_TAGS)}
    assert later  # the card's rights and the base's licence are recorded at registration too
    assert {k for k in tags if not is_record_tag(k)} == later
    for key in ("rights.consent", "licence.base_agreement", "distribution", "tested.2.3", "note"):
        assert not is_record_tag(key)
