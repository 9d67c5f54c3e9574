"""Register + verified pull of a large adapter against plain file copies of the same bytes.

The adapter is what training writes: a diffusers and a ComfyUI file of LTX_LORA_BENCH_MB each
(default 400, the size of a rank-32 LoRA of the 19B model), and train.json with their sha256 as
training records them. Ours: `register_adapter` into a fresh local registry (manifest from the
recorded digests, upload, model version) then `pull --format comfyui` (copy hashing every byte
written, size + sha256 check, atomic rename). Baseline: `shutil.copy` of both files into a
store folder, then of the ComfyUI file out of it. Same run, same page cache, best of 4, each
starting after a sync (not timed) so neither pays for the other's write-back.
LTX_LORA_BENCH_DIR measures on another filesystem, e.g. one with reflinks (XFS, btrfs).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import Result
from registry.register import LINK_ENV
from stagekit.hashing import sha256_file

SIZE_ENV = "LTX_LORA_BENCH_MB"
DIR_ENV = "LTX_LORA_BENCH_DIR"
REPEATS = 4


def run() -> list[Result]:
    """Register + pull vs copy in + copy out: into a local store that copies the adapter files
    (the default) and into one that hard-links them (LTX_LORA_REGISTRY_LINK=1)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mb = int(os.environ.get(SIZE_ENV, "400"))
    # LTX_LORA_BENCH_DIR: where to measure, e.g. on a filesystem with reflinks (XFS, btrfs)
    where = os.environ.get(DIR_ENV) or None
    with tempfile.TemporaryDirectory(prefix="bench-registry-", dir=where) as tmp:
        root = Path(tmp)
        train = _train_dir(root / "train", mb)
        template = _template_db(root / "template")
        times: dict[str, list[float]] = {"base": [], "link": [], "copy": []}
        for i in range(REPEATS):  # interleaved, rotating who goes first: same machine load
            # Fresh folder names (MLflow keeps one database engine per URI for the process),
            # and a freshly trained adapter each time (a registered one was linked: it changed).
            runs = [
                ("base", lambda out: _copy_baseline(train, out)),
                ("link", lambda out: _register_and_pull(_retrained(train, out), template, out)),
                ("copy", lambda out: _register_and_pull(_retrained(train, out), template, out)),
            ]
            for key, fn in runs[i % 3 :] + runs[: i % 3]:
                out = root / f"{key}{i}"
                # Each starts with no dirty pages: otherwise the second one waits for the kernel
                # to write back what the first one wrote (seconds on this disk).
                with _linking(key == "link"):
                    times[key].append(fn(out))
                shutil.rmtree(out)
    note = f"2 layouts x {mb} MB; pull hashes every byte" + (f"; in {where}" if where else "")
    return [
        Result(
            name=f"registry register+pull {mb}MB",
            baseline="shutil.copy in + out",
            baseline_s=min(times["base"]),
            ours_s=min(times["copy"]),
            target=0.5,
            note=note,
        ),
        Result(
            name=f"registry (linking store) {mb}MB",
            baseline="shutil.copy in + out",
            baseline_s=min(times["base"]),
            ours_s=min(times["link"]),
            note=note + f"; {LINK_ENV}=1",
        ),
    ]


@contextmanager
def _linking(on: bool) -> Iterator[None]:
    old = os.environ.get(LINK_ENV)
    os.environ[LINK_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        os.environ.pop(LINK_ENV) if old is None else os.environ.update({LINK_ENV: old})


def _retrained(train: Path, out: Path) -> Path:
    """A copy of `train` as a new training run leaves it: files, then train.json (not timed)."""
    dest = out / "train"
    shutil.copytree(train / "adapter", dest / "adapter")
    time.sleep(0.05)  # train.json is written after the export check, never in the same tick
    shutil.copy(train / "train.json", dest / "train.json")
    return dest


def _register_and_pull(train: Path, template: Path, root: Path) -> float:
    from registry.pull import pull
    from registry.register import register_adapter
    from registry.store import local_tracking_uri, open_client

    mlflow_dir = root / ".mlflow"
    mlflow_dir.mkdir(parents=True)
    shutil.copy(template, mlflow_dir / "mlflow.db")
    client = open_client(local_tracking_uri(mlflow_dir), mlflow_dir / "artifacts")
    os.sync()
    start = time.perf_counter()
    reg = register_adapter(
        client, name="bench.adapter", train_dir=train, eval_dir=None, experiment="ltx-lora"
    )
    pull(client, reg.name, str(reg.version), "comfyui", root / "pulled")
    return time.perf_counter() - start


def _copy_baseline(train: Path, root: Path) -> float:
    os.sync()
    start = time.perf_counter()
    store = root / "store"
    store.mkdir(parents=True)
    for name in ("adapter.safetensors", "comfyui.safetensors"):
        shutil.copy(train / "adapter" / name, store / name)
    (root / "out").mkdir()
    shutil.copy(store / "comfyui.safetensors", root / "out" / "comfyui.safetensors")
    return time.perf_counter() - start


def _template_db(root: Path) -> Path:
    """A registry schema made once, outside the timings (it costs seconds, a copy nothing)."""
    from registry.store import ensure_schema, local_tracking_uri

    ensure_schema(local_tracking_uri(root / ".mlflow"))
    return root / ".mlflow" / "mlflow.db"


def _train_dir(root: Path, mb: int) -> Path:
    """A training folder as `ltx-lora train` leaves it: two adapter files (valid safetensors of
    `mb` MB each), then train.json recording their sha256 (training hashes what it exports)."""
    (root / "adapter").mkdir(parents=True)
    files = {}
    for i, name in enumerate(("adapter.safetensors", "comfyui.safetensors")):
        _safetensors(root / "adapter" / name, mb << 20, seed=i)
        files[name] = sha256_file(root / "adapter" / name)
    time.sleep(0.05)  # train.json is written after the export check, never in the same tick
    lineage = dict.fromkeys(
        ["dataset_hash", "base_model", "base_model_hash", "config_hash", "git_commit"], "bench"
    )
    record = {"run_name": "bench", "lineage": {**lineage, "ltx_version": "2.0"}, "files": files}
    (root / "train.json").write_text(json.dumps(record))
    return root


def _safetensors(path: Path, nbytes: int, seed: int) -> None:
    """One U8 tensor of `nbytes` (random 1 MiB blocks) with a metadata header."""
    header = {
        "__metadata__": {"base_model": "bench", "format": path.stem},
        "w": {"dtype": "U8", "shape": [nbytes], "data_offsets": [0, nbytes]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    block = os.urandom(1 << 20) + bytes([seed])
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for offset in range(0, nbytes, 1 << 20):
            f.write(block[: min(1 << 20, nbytes - offset)])
