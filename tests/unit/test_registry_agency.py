"""Licence records, base-version compatibility, folder sync and `registry.fetch`, on a real MLflow
(sqlite) with real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ltx_lora.cli import main
from registry.licence import set_licence
from registry.promote import alias_history, promote
from registry.pull import pull
from registry.read import show
from registry.register import register_adapter
from registry.store import local_tracking_uri, open_client
from registry.sync import LOCK, MANIFEST, _lock, sync
from stagekit.errors import UserError
from stagekit.hashing import sha256_file
from tests.unit.test_registry_register import (
    CARD,
    make_eval_dir,
    make_train_dir,
    shared_template_db,
)

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
ROOT = Path(__file__).resolve().parents[2]
NAME = "acme.mascot"
SCORES = {"fidelity_adapter": 0.5, "fidelity_base": 0.3}


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_template_db(tmp_path_factory)


@pytest.fixture
def client(tmp_path: Path, template_db: Path) -> Any:
    mlflow_dir = tmp_path / ".mlflow"
    mlflow_dir.mkdir()
    shutil.copy(template_db, mlflow_dir / "mlflow.db")
    return open_client(local_tracking_uri(mlflow_dir), mlflow_dir / "artifacts")


def add(
    client: Any,
    root: Path,
    seed: int,
    *,
    name: str = NAME,
    card: dict | None = CARD,
    eval_extra: dict | None = None,
    train: Path | None = None,
) -> Any:
    """Register one adapter (passing evaluation, `eval_extra` merged into its metrics.json)."""
    ev = make_eval_dir(root / f"e{seed}-{len(list(root.glob('e*')))}", scores=SCORES)
    if eval_extra:
        metrics = json.loads((ev / "metrics.json").read_text())
        (ev / "metrics.json").write_text(json.dumps(metrics | eval_extra))
    return register_adapter(
        client,
        name=name,
        train_dir=train or make_train_dir(root / f"t{seed}", seed=seed),
        eval_dir=ev,
        experiment="ltx-lora",
        dataset_card=None if card is None else card | {"client": name.split(".")[0]},
    )


# --- licence and distribution ----------------------------------------------------------------


def test_a_card_without_rights_registers_internal_only_and_cannot_be_promoted(
    client, tmp_path, caplog
):
    card = {k: v for k, v in CARD.items() if k != "rights"}
    v = add(client, tmp_path, 1, card=card).version
    assert "registered as internal only: the dataset card has no rights statement" in caplog.text
    record = show(client, NAME, str(v))["licence"]
    assert record["distribution"] == "internal" and record["data_rights"] is None
    with pytest.raises(UserError, match=r"promotion .* refused: .* 'internal' distribution only"):
        promote(client, NAME, v)
    # Raising the flag does not get past a record that does not allow it.
    with pytest.raises(UserError, match=r"cannot be 'client'.*no rights statement"):
        set_licence(client, NAME, v, {"distribution": "client"}, reason="try")
    assert (client.get_registered_model(NAME).aliases or {}) == {"candidate": v}


def test_licence_record_is_shown_changed_with_reason_and_audited(client, tmp_path, capsys):
    v = add(client, tmp_path, 1).version  # CARD: owner and rights, no licence, no consent
    info = show(client, NAME, str(v))
    assert info["licence"]["distribution"] == "client"
    assert info["licence"]["base_licence"].startswith("ltx-lora tiny")  # base ltx2-tiny
    with pytest.raises(UserError, match=r"cannot be 'public'.*no `licence`.*consent"):
        set_licence(client, NAME, v, {"distribution": "public"}, reason="web release")
    licence = tmp_path / "LICENSE.txt"
    licence.write_text("LTX-2 Community License Agreement …\n")
    ws = ["--workspace", str(tmp_path)]
    args = [*ws, "registry", "licence", NAME, str(v), "--distribution", "public"]
    args += ["--data-licence", "CC-BY-4.0", "--consent", "no-people", "--agreement", "LT-812"]
    args += ["--licence-file", str(licence), "--actor", "dana"]
    assert main(args) == 1  # no --reason
    assert "needs --reason" in capsys.readouterr().err
    assert main([*args, "--reason", "client asked for a public showcase"]) == 0
    assert main([*ws, "registry", "show", f"{NAME}@{v}"]) == 0
    out = capsys.readouterr().out
    assert "distribution      public" in out and "consent           no-people" in out
    assert f"file sha256 {sha256_file(licence)[:16]}" in out
    (event,) = alias_history(client, NAME)
    assert (event.action, event.who) == ("licence", "dana")
    assert "public showcase" in event.why and "distribution client → public" in event.why
    # Consent withdrawn: back to internal; the champion can no longer be pulled by its alias.
    promote(client, NAME, v)
    set_licence(
        client,
        NAME,
        v,
        {"rights.consent": "not-obtained", "distribution": "internal"},
        reason="consent withdrawn",
    )
    with pytest.raises(UserError, match=r"pull of acme.mascot@champion refused: .*not 'client'"):
        pull(client, NAME, "champion", "comfyui", tmp_path / "out")
    assert pull(client, NAME, str(v), "comfyui", tmp_path / "out").version == v  # internal use
    with pytest.raises(UserError, match="consent of the people shown was not obtained"):
        set_licence(client, NAME, v, {"distribution": "client"}, reason="try again")


def test_ltx_2_5_needs_a_recorded_agreement_to_reach_a_client(client, tmp_path):
    train = make_train_dir(tmp_path / "t25", seed=3)
    record = json.loads((train / "train.json").read_text())
    record["lineage"] |= {"ltx_version": "2.5", "base_model": "ltx2.5"}
    (train / "train.json").write_text(json.dumps(record))
    v = add(client, tmp_path, 3, train=train).version
    info = show(client, NAME, str(v))["licence"]
    assert info["distribution"] == "internal" and info["base_licence"] == "LTX-2 Community License"
    assert "commercial agreement" in info["blocks_client"][0]
    set_licence(
        client,
        NAME,
        v,
        {"licence.base_agreement": "Lightricks #812", "distribution": "client"},
        reason="agreement signed",
    )
    assert promote(client, NAME, v).to_version == v


# --- base-version compatibility ---------------------------------------------------------------


def test_pull_on_another_base_version_is_refused_until_evaluated_there(client, tmp_path, capsys):
    train = make_train_dir(tmp_path / "t1", seed=1)
    v = add(client, tmp_path, 1, train=train, eval_extra={"ltx_version": "2.0"}).version
    promote(client, NAME, v)
    out = tmp_path / "out"
    assert pull(client, NAME, "champion", "diffusers", out, base="2.0").warning is None
    with pytest.raises(UserError, match=r"trained on LTX-2.0 .*evaluated on 2.0 \(pass\).*2.5"):
        pull(client, NAME, "champion", "diffusers", out, base="2.5")
    got = pull(client, NAME, "champion", "diffusers", out, base="2.5", allow_cross_version=True)
    assert "--allow-cross-version" in got.warning
    # An evaluation on another suite is recorded but does not count.
    other = add(client, tmp_path, 1, train=train, eval_extra={"ltx_version": "2.3", "rule": "x"})
    assert not other.created and "on another eval suite: not counted" in other.message
    # The same suite and gate on 2.5, registered: the same version, now tested on 2.5.
    again = add(client, tmp_path, 1, train=train, eval_extra={"ltx_version": "2.5"})
    assert (again.created, again.version) == (False, v)
    assert "evaluation on LTX-2.5 is recorded on version 1 (verdict pass)" in again.message
    info = show(client, NAME, "champion")
    assert set(info["evaluated_on"]) == {"2.0", "2.3", "2.5"}
    assert info["supported_bases"] == ["2.0", "2.5"]
    assert pull(client, NAME, "champion", "diffusers", out, base="2.5").warning is None
    ws = ["--workspace", str(tmp_path)]
    assert main([*ws, "pull", NAME, "--for", "comfyui", "--to", str(out), "--base", "2.3"]) == 1
    assert "--allow-cross-version" in capsys.readouterr().err
    assert main([*ws, "registry", "show", NAME]) == 0
    shown = capsys.readouterr().out
    assert "evaluated on      2.0 (pass), 2.3 (pass, other suite), 2.5 (pass)" in shown
    # Registering the same evaluation again changes nothing.
    before = dict(client.get_model_version(NAME, str(v)).tags)
    assert add(client, tmp_path, 1, train=train, eval_extra={"ltx_version": "2.5"}).message
    assert dict(client.get_model_version(NAME, str(v)).tags) == before


# --- sync -------------------------------------------------------------------------------------


def listing(folder: Path) -> dict[str, int]:
    return {
        p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK
    }


def test_sync_keeps_a_folder_holding_exactly_the_entitled_champions(client, tmp_path, capsys):
    m1 = add(client, tmp_path, 1).version
    promote(client, NAME, m1)
    logo = add(client, tmp_path, 2, name="acme.logo").version
    promote(client, "acme.logo", logo)
    other = add(client, tmp_path, 3, name="beta.spot").version
    promote(client, "beta.spot", other)
    add(client, tmp_path, 4, name="acme.draft")  # no champion: not synced
    dest = tmp_path / "ComfyUI" / "models" / "loras"
    dest.mkdir(parents=True)
    (dest / "hand-made.safetensors").write_bytes(b"mine")

    result = sync(client, dest, consumer="comfyui", client_slug="acme")
    assert sorted(result.written) == ["acme.logo.safetensors", "acme.mascot.safetensors"]
    files = json.loads((dest / MANIFEST).read_text())["files"]
    for rel, entry in files.items():
        assert sha256_file(dest / rel) == entry["sha256"]  # the registry's recorded sha256
    assert files["acme.mascot.safetensors"]["version"] == m1

    before = listing(dest)
    again = sync(client, dest, consumer="comfyui", client_slug="acme")
    assert not again.changed and listing(dest) == before  # the manifest is not rewritten either

    # A new champion replaces the file; a licence lowered to internal removes the other one.
    m2 = add(client, tmp_path, 5).version
    promote(client, NAME, m2)
    set_licence(client, "acme.logo", logo, {"distribution": "internal"}, reason="client left")
    result = sync(client, dest, consumer="comfyui", client_slug="acme")
    assert result.written == ["acme.mascot.safetensors"]
    assert result.removed == ["acme.logo.safetensors"]
    assert "'internal' distribution only" in result.skipped["acme.logo"]
    assert sorted(listing(dest)) == ["acme.mascot.safetensors", "hand-made.safetensors", MANIFEST]
    assert (
        json.loads((dest / MANIFEST).read_text())["files"]["acme.mascot.safetensors"]["version"]
        == m2
    )

    # The CLI: in sync, exit 0. Without --client the folder is an internal surface: every
    # champion, internal ones too; the diffusers layout gets a folder per model.
    ws = ["--workspace", str(tmp_path)]
    cmd = [*ws, "registry", "sync", "--alias", "champion", "--for", "comfyui", "--to", str(dest)]
    assert main([*cmd, "--client", "acme"]) == 0
    assert "already in sync, nothing changed" in capsys.readouterr().out
    diff = tmp_path / "diffusers"
    assert main([*ws, "registry", "sync", "--for", "diffusers", "--to", str(diff)]) == 0
    assert sorted(listing(diff)) == [
        "acme.logo/pytorch_lora_weights.safetensors",
        "acme.mascot/pytorch_lora_weights.safetensors",
        "beta.spot/pytorch_lora_weights.safetensors",
        MANIFEST,
    ]


def test_sync_refuses_tampered_files_keeps_files_on_a_full_disk_and_locks(client, tmp_path):
    v1 = add(client, tmp_path, 1).version
    promote(client, NAME, v1)
    dest = tmp_path / "loras"
    sync(client, dest, client_slug="acme")
    kept = sha256_file(dest / f"{NAME}.safetensors")

    v2 = add(client, tmp_path, 2).version
    promote(client, NAME, v2)
    stored = _stored(client, v2)
    good = stored.read_bytes()
    stored.write_bytes(good[:-4] + b"\x00\x00\x00\x01")  # same size, other bytes
    result = sync(client, dest, client_slug="acme")
    assert "stored file was altered" in result.failed[NAME] and not result.written
    assert sha256_file(dest / f"{NAME}.safetensors") == kept
    assert json.loads((dest / MANIFEST).read_text())["files"][f"{NAME}.safetensors"]["version"] == 1
    stored.write_bytes(good)

    # A disk that fills during the download (the 792-byte file; 500 bytes fit): the write fails
    # (RLIMIT_FSIZE, as on a full disk), nothing half-written appears, the previous file stays.
    code = f"""
        import resource, signal, json
        from registry.store import open_client
        from registry.sync import sync
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (500, 500))  # files.json fits
        r = sync(open_client({client.tracking_uri!r}, experiment=None), {str(dest)!r},
                 client_slug="acme")
        print(json.dumps(r.failed))
    """
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "no room to write" in json.loads(proc.stdout.splitlines()[-1])[NAME]
    assert sha256_file(dest / f"{NAME}.safetensors") == kept
    assert sorted(p.name for p in dest.iterdir()) == [LOCK, NAME + ".safetensors", MANIFEST]

    with _lock(dest) as held:  # a cron run while another is still going: nothing done
        assert held and sync(client, dest, client_slug="acme").busy
    assert sync(client, dest, client_slug="acme").written == [f"{NAME}.safetensors"]
    assert sha256_file(dest / f"{NAME}.safetensors") == sha256_file(stored)


def _stored(client: Any, version: int) -> Path:
    from urllib.parse import unquote, urlparse

    run_id = client.get_model_version(NAME, str(version)).run_id
    root = Path(unquote(urlparse(client.get_run(run_id).info.artifact_uri).path))
    return root / "adapter" / "comfyui.safetensors"


# --- registry.fetch ---------------------------------------------------------------------------


def test_fetch_returns_a_verified_path_without_importing_torch(client, tmp_path):
    v = add(client, tmp_path, 1).version
    promote(client, NAME, v)
    code = f"""
        import sys
        import registry
        p = registry.fetch("acme.mascot@champion", for_="diffusers",
                           tracking_uri={client.tracking_uri!r}, cache={str(tmp_path / "c")!r})
        again = registry.fetch("acme.mascot", tracking_uri={client.tracking_uri!r},
                               cache={str(tmp_path / "c")!r})
        assert again == p and "torch" not in sys.modules, sorted(sys.modules)
        print(p)
    """
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.name == "pytorch_lora_weights.safetensors" and path.parent.name == "diffusers"
    manifest = show(client, NAME, "champion")["files"]["adapter.safetensors"]
    assert sha256_file(path) == manifest["sha256"]


# --- generate on another base version ---------------------------------------------------------


def test_generate_on_another_base_version_is_refused_unless_allowed(client, tmp_path, capsys):
    add(client, tmp_path, 1)  # trained and evaluated on LTX-2.0
    argv = ["--workspace", str(tmp_path), "generate", "model=ltx2_5"]
    argv += ["--tracking-uri", client.tracking_uri, "--adapter", f"{NAME}@candidate"]
    argv += ["--prompt", "zorblat mascot", "--out", str(tmp_path / "x.mp4")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "trained on LTX-2.0" in err and "not on LTX-2.5" in err
    assert "or pass --allow-cross-version" in err
    assert main([*argv, "--allow-cross-version"]) == 1  # now it gets as far as the base weights
    err = capsys.readouterr().err
    assert "used anyway (--allow-cross-version)" in err and "model.path" in err
    assert not (tmp_path / "x.mp4").exists()


# --- retire -----------------------------------------------------------------------------------


def test_archive_keeps_the_version_records_who_and_why_and_blocks_promotion(
    client, tmp_path, capsys
):
    v1 = add(client, tmp_path, 1).version
    promote(client, NAME, v1)
    v2 = add(client, tmp_path, 2).version
    promote(client, NAME, v2)
    ws = ["--workspace", str(tmp_path)]
    assert main([*ws, "registry", "archive", NAME, str(v2), "--reason", "old"]) == 1
    assert "is champion: move the alias first" in capsys.readouterr().err
    args = [*ws, "registry", "archive", NAME, str(v1), "--reason", "superseded by v2"]
    assert main([*args, "--keep-days", "30", "--actor", "dana"]) == 0
    assert "files kept until" in capsys.readouterr().out
    assert "superseded by v2" in show(client, NAME, str(v1))["archived"]
    assert client.get_model_version(NAME, str(v1)).run_id  # nothing deleted
    with pytest.raises(UserError, match=r"rollback of .* version 1 refused: .*archived"):
        main_rollback(client)
    with pytest.raises(UserError, match=r"promotion of acme\.mascot version 1 refused"):
        promote(client, NAME, v1, force=True, reason="bring it back")
    events = alias_history(client, NAME)
    assert [e.action for e in events] == ["promote", "promote", "archive"]
    assert events[-1].who == "dana" and "superseded by v2" in events[-1].why
    assert pull(client, NAME, str(v1), "comfyui", tmp_path / "audit").version == v1  # files kept


def main_rollback(client: Any) -> None:
    from registry.promote import rollback

    rollback(client, NAME, reason="flicker")


def test_a_version_registered_before_licences_gets_its_record_from_its_card(client, tmp_path):
    v = add(client, tmp_path, 1).version
    for key in list(client.get_model_version(NAME, str(v)).tags):  # as registered before
        if key.startswith(("rights.", "licence.")) or key == "distribution":
            client.delete_model_version_tag(NAME, str(v), key)
    with pytest.raises(UserError, match="has no licence record"):
        promote(client, NAME, v)
    record = set_licence(client, NAME, v, {"distribution": "client"}, reason="records added")
    assert record["data_owner"] == "Acme Brand Team" and record["distribution"] == "client"
    assert promote(client, NAME, v).to_version == v


def test_card_rights_fields_reach_the_registry_without_changing_stage_fingerprints(
    client, tmp_path
):
    import yaml

    from curation.card import load_card

    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(CARD | {"licence": "CC-BY-4.0", "consent": "no-people"}))
    card = load_card(path)
    assert card.model_dump() == CARD  # curate/caption/evaluate hash this: unchanged
    path.write_text(yaml.safe_dump(CARD | {"consent": "maybe"}))
    with pytest.raises(UserError, match=r"field 'consent' is invalid.*no-people"):
        load_card(path)
    v = register_adapter(
        client,
        name=NAME,
        train_dir=make_train_dir(tmp_path / "t", seed=1),
        eval_dir=None,
        experiment="ltx-lora",
        dataset_card=card.registry_record(),
    ).version
    record = show(client, NAME, str(v))["licence"]
    assert (record["data_licence"], record["consent"]) == ("CC-BY-4.0", "no-people")
    set_licence(
        client, NAME, v, {"licence.base_agreement": "LT-1", "distribution": "public"}, reason="ok"
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 256 KiB tmpfs (root only; skipped elsewhere): a disk that really fills up."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_sync_on_a_really_full_disk_keeps_the_previous_file(client, tmp_path, small_disk):
    v1 = add(client, tmp_path, 1).version
    promote(client, NAME, v1)
    dest = small_disk / "loras"
    assert sync(client, dest, client_slug="acme").written == [f"{NAME}.safetensors"]
    kept = sha256_file(dest / f"{NAME}.safetensors")
    promote(client, NAME, add(client, tmp_path, 2).version)
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    result = sync(client, dest, client_slug="acme")
    assert "no room to write" in result.failed[NAME]
    assert sha256_file(dest / f"{NAME}.safetensors") == kept
    assert sorted(p.name for p in dest.iterdir()) == [LOCK, f"{NAME}.safetensors", MANIFEST]
    filler.unlink()
    assert sync(client, dest, client_slug="acme").written == [f"{NAME}.safetensors"]
    assert sha256_file(dest / f"{NAME}.safetensors") != kept
