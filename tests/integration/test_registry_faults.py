"""The local registry under faults, for real: pulls SIGKILLed part-way, a forged stored file and
its list, eight processes registering the same adapter, a moved workspace, a disk that is full.
Each case ends with a one-line error or a correct result; nothing a consumer sees is partial."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from safetensors.numpy import save_file

from registry.api import fetch
from registry.pull import THROTTLE_ENV, pull
from registry.register import register_adapter
from registry.staging import STAGING_DIR
from registry.store import local_tracking_uri, open_client
from stagekit.errors import DiskFullError, UserError
from stagekit.hashing import sha256_file
from tests.unit.test_registry_register import CARD, NAME, make_train_dir

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / ".venv" / "bin" / "ltx-lora"
pytestmark = pytest.mark.timeout(300)


def big_train_dir(root: Path, seed: int, rows: int = 2048) -> Path:
    """A training folder whose ComfyUI file is ~1 MB: long enough to kill a pull inside it."""
    make_train_dir(root, seed=seed)
    rng = np.random.default_rng(seed)
    lora = {
        "diffusion_model.blocks.0.attn1.to_q.lora_A.weight": rng.standard_normal((64, rows)),
        "diffusion_model.blocks.0.attn1.to_q.lora_B.weight": rng.standard_normal((rows, 64)),
    }
    tensors = {k: (v * 0.01).astype(np.float32) for k, v in lora.items()}
    save_file(tensors, root / "adapter" / "comfyui.safetensors", metadata={"rank": "64"})
    return root


def register(client: Any, train: Path, eval_dir: Path | None = None) -> Any:
    return register_adapter(
        client,
        name=NAME,
        train_dir=train,
        eval_dir=eval_dir,
        experiment="ltx-lora",
        dataset_card=CARD,
    )


def workspace_client(ws: Path) -> Any:
    mlflow_dir = ws / ".mlflow"
    return open_client(local_tracking_uri(mlflow_dir), mlflow_dir / "artifacts")


def stored_dir(client: Any, version: int | str) -> Path:
    run_id = client.get_model_version(NAME, str(version)).run_id
    return Path(unquote(urlparse(client.get_run(run_id).info.artifact_uri).path))


def listing(root: Path) -> dict[str, str]:
    """Every path under `root` (hidden ones too) with its sha256 (folders: "dir")."""
    return {
        p.relative_to(root).as_posix(): "dir" if p.is_dir() else sha256_file(p)
        for p in sorted(root.rglob("*"))
    }


def pull_cli(ws: Path, ref: str, dest: Path, env: dict[str, str]) -> Any:
    """`ltx-lora pull REF --for comfyui --to DEST` in workspace `ws`, as a user runs it."""
    argv = [str(CLI), "--workspace", str(ws), "pull", ref, "--for", "comfyui", "--to", str(dest)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240)


def _env(**extra: str) -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)} | extra


# --- pulls stage outside the destination ------------------------------------------------------


def test_a_pull_killed_at_any_byte_leaves_the_destination_as_it_was(tmp_path):
    ws, cache = tmp_path / "ws", tmp_path / "cache"
    client = workspace_client(ws)
    register(client, big_train_dir(tmp_path / "t1", seed=1))
    v2 = register(client, big_train_dir(tmp_path / "t2", seed=2)).version
    dest = tmp_path / "ComfyUI" / "models" / "loras"
    pull(client, NAME, "1", "comfyui", dest)
    before = listing(dest)
    size = (stored_dir(client, v2) / "adapter" / "comfyui.safetensors").stat().st_size
    staging = cache / "ltx-lora" / "staging"

    for offset in (4096, size // 3, size * 3 // 4):
        env = _env(**{THROTTLE_ENV: str(size), "XDG_CACHE_HOME": str(cache)})
        argv = [str(CLI), "--workspace", str(ws), "pull", f"{NAME}@{v2}", "--for", "comfyui"]
        earlier = set(staging.iterdir()) if staging.exists() else set()
        proc = subprocess.Popen([*argv, "--to", str(dest)], env=env, stderr=subprocess.PIPE)
        staged = _wait_for_bytes(staging, earlier, offset, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert offset <= staged < size  # killed inside the file, at or past this offset
        assert listing(dest) == before, f"killed at {staged} bytes"
        # each pull removed what the one killed before it left
        assert len(list(staging.iterdir())) == 1

    env = _env(XDG_CACHE_HOME=str(cache))
    done = pull_cli(ws, f"{NAME}@{v2}", dest, env)
    assert done.returncode == 0, done.stderr
    assert sorted(listing(dest)) == sorted(before)  # the same names, the file replaced
    assert sha256_file(dest / f"{NAME}.safetensors") == sha256_file(
        stored_dir(client, v2) / "adapter" / "comfyui.safetensors"
    )
    assert list(staging.iterdir()) == []  # the killed pulls' staging is gone too


def test_staging_is_beside_the_destination_when_the_cache_is_on_another_disk(tmp_path, monkeypatch):
    client = workspace_client(tmp_path / "ws")
    register(client, make_train_dir(tmp_path / "t1", seed=1))
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        dest = mnt / "loras"
        (mnt / STAGING_DIR / "otherhost-1-abc").mkdir(parents=True)  # another host's: kept
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # on the root disk
        got = pull(client, NAME, "1", "comfyui", dest)
        assert sorted(p.name for p in dest.iterdir()) == [f"{NAME}.pull.json", got.path.name]
        assert [p.name for p in (mnt / STAGING_DIR).iterdir()] == ["otherhost-1-abc"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# --- the version's record is the authority ---------------------------------------------------


def test_a_forged_file_and_its_files_json_are_refused_naming_both_hashes(tmp_path):
    client = workspace_client(tmp_path / "ws")
    reg = register(client, make_train_dir(tmp_path / "t1", seed=1))
    folder = stored_dir(client, reg.version) / "adapter"
    forged = make_train_dir(tmp_path / "forger", seed=7) / "adapter" / "adapter.safetensors"
    manifest = json.loads((folder / "files.json").read_text())
    for name in ("adapter.safetensors", "files.json"):
        (folder / name).chmod(0o644)  # what someone with write access to the store can do
    shutil.copyfile(forged, folder / "adapter.safetensors")
    manifest["adapter.safetensors"] = {
        "sha256": sha256_file(forged),
        "bytes": forged.stat().st_size,
    }
    (folder / "files.json").write_text(json.dumps(manifest))

    dest = tmp_path / "adapters"
    for get in (
        lambda: pull(client, NAME, str(reg.version), "diffusers", dest),
        lambda: fetch(f"{NAME}@{reg.version}", tracking_uri=client.tracking_uri, cache=dest),
    ):
        with pytest.raises(UserError) as refused:
            get()
        text = str(refused.value)
        assert sha256_file(forged) in text and reg.adapter_sha256 in text and "\n" not in text
    assert not dest.exists() or not any(dest.rglob("*.safetensors"))


def test_a_registered_versions_files_are_read_only_in_a_local_store(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("handing the store to another user needs root")
    ws = Path(tempfile.mkdtemp(prefix="ltx-lora-ro-"))  # under /tmp: any user may traverse
    try:
        ws.chmod(0o755)
        client = workspace_client(ws)
        reg = register(client, make_train_dir(tmp_path / "t1", seed=1))
        files = [p for p in stored_dir(client, reg.version).rglob("*") if p.is_file()]
        assert files and all(p.stat().st_mode & 0o222 == 0 for p in files)
        # The store's owner (a plain user here, who owns every file) cannot write over them.
        target = stored_dir(client, reg.version) / "adapter" / "adapter.safetensors"
        subprocess.run(["chown", "-R", "65534:65534", str(ws)], check=True)
        as_owner = {"user": 65534, "group": 65534, "capture_output": True, "text": True}
        read = subprocess.run(["sh", "-c", 'head -c 8 "$0" >/dev/null', str(target)], **as_owner)
        assert read.returncode == 0, read.stderr  # it may read the file: only writing is refused
        write = subprocess.run(["sh", "-c", 'printf x 1<>"$0"', str(target)], **as_owner)
        assert write.returncode != 0 and "Permission denied" in write.stderr, write.stderr
        assert sha256_file(target) == reg.adapter_sha256
    finally:
        shutil.rmtree(ws, ignore_errors=True)


# --- eight processes, one adapter -----------------------------------------------------------


def test_eight_processes_registering_the_same_adapter_make_one_version(tmp_path):
    ws = tmp_path / "ws"
    client = workspace_client(ws)  # the schema exists before the race, as after any register
    train, go = make_train_dir(tmp_path / "t", seed=3), tmp_path / "go"
    code = f"""
        import json, os, time
        from pathlib import Path
        from registry.register import register_adapter
        from registry.store import local_tracking_uri, open_client
        from tests.unit.test_registry_register import CARD
        client = open_client(local_tracking_uri(Path({str(ws / ".mlflow")!r})))
        Path({str(go)!r} + f".ready.{{os.getpid()}}").touch()  # imported and connected
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        r = register_adapter(client, name={NAME!r}, train_dir=Path({str(train)!r}),
                             eval_dir=None, experiment="ltx-lora", dataset_card=CARD)
        print(json.dumps([r.version, r.created, r.run_id]))
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    release_together(go, procs)
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(created for _, created, _ in results) == [False] * 7 + [True]
    assert {(v, run) for v, _, run in results} == {(1, results[0][2])}
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1


# --- a moved or copied workspace ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["mv", "cp"])
def test_a_moved_or_copied_workspace_keeps_to_itself(tmp_path, how):
    old = tmp_path / "old"
    client = workspace_client(old)
    register(client, make_train_dir(tmp_path / "t1", seed=1))
    new = tmp_path / "new"
    subprocess.run([how, "-a" if how == "cp" else "-T", str(old), str(new)], check=True)
    before = listing(old) if old.exists() else None

    moved = workspace_client(new)
    got = pull(moved, NAME, "1", "comfyui", tmp_path / "loras")
    assert got.sha256 == sha256_file(stored_dir(moved, 1) / "adapter" / "comfyui.safetensors")
    reg = register(moved, make_train_dir(tmp_path / "t2", seed=2))
    assert (reg.version, reg.created) == (2, True)
    assert stored_dir(moved, 2).is_relative_to(new)
    assert stored_dir(moved, 1).is_relative_to(new)
    if how == "mv":
        assert not old.exists()  # nothing written back to where it was
    else:
        assert listing(old) == before  # the original is untouched
        assert len(workspace_client(old).search_model_versions(f"name = '{NAME}'")) == 1


# --- a full disk --------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 16 MiB tmpfs (root only; skipped elsewhere): a disk that really fills up."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)])
    if made.returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_a_full_disk_is_one_line_naming_the_path_and_free_space(tmp_path, small_disk):
    # The database on the full disk, the artifacts elsewhere: sqlite's "database or disk is full"
    db_dir = small_disk / ".mlflow"
    client = open_client(local_tracking_uri(db_dir), tmp_path / "artifacts")
    fill(small_disk)
    with pytest.raises(DiskFullError) as full:
        register(client, make_train_dir(tmp_path / "t1", seed=1))
    assert str(small_disk) in str(full.value) and "free there" in str(full.value)
    assert "\n" not in str(full.value)
    (small_disk / "filler").unlink()

    # A pull onto a full disk, through the CLI: one line on stderr, exit 1, nothing written.
    ws = tmp_path / "ws"
    register(workspace_client(ws), make_train_dir(tmp_path / "t2", seed=2))
    dest = small_disk / "loras"
    dest.mkdir()
    fill(small_disk)
    env = _env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = pull_cli(ws, f"{NAME}@1", dest, env)
    assert done.returncode == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "no space left" in done.stderr and str(small_disk) in done.stderr
    assert list(dest.iterdir()) == []


def release_together(go: Path, procs: list[subprocess.Popen[str]]) -> None:
    """Touch `go` once every process has said it is ready, so all of them look for the
    adapter at the same moment (a race, not a queue)."""
    deadline = time.monotonic() + 180
    while len(list(go.parent.glob(go.name + ".ready.*"))) < len(procs):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.touch()


def _wait_for_bytes(
    root: Path, earlier: set[Path], offset: int, proc: subprocess.Popen[bytes]
) -> int:
    """Poll the staging folders `proc` makes under `root` (not those in `earlier`) until its
    staged ComfyUI file holds at least `offset` bytes."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        for path in root.glob("*/comfyui.safetensors"):
            if path.parent in earlier:
                continue
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size >= offset:
                return size
        time.sleep(0.002)
    raise AssertionError(f"the pull never staged {offset} bytes")
