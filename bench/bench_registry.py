"""Register + verified pull of a large adapter against plain file copies of the same bytes.

The adapter is what training writes: a diffusers and a ComfyUI file of LTX_LORA_BENCH_MB each
(default 400, the size of a rank-32 LoRA of the 19B model), and train.json with their sha256 as
training records them. Ours: `register_adapter` into a fresh local registry (manifest from the
recorded digests, upload, model version) then `pull --format comfyui` (copy hashing every byte
written, size + sha256 check, atomic rename). Baseline: `shutil.copy` of both files into a
store folder, then of the ComfyUI file out of it. Same run, same page cache, best of 4, each
starting after a sync (not timed) so neither pays for the other's write-back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import Result
from stagekit.hashing import sha256_file

SIZE_ENV = "LTX_LORA_BENCH_MB"
REPEATS = 4


def run() -> list[Result]:
    """One Result: register + pull vs copy in + copy out."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mb = int(os.environ.get(SIZE_ENV, "400"))
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        root = Path(tmp)
        train = _train_dir(root / "train", mb)
        template = _template_db(root / "template")
        ours, base = [], []
        for i in range(REPEATS):  # interleaved, alternating who goes first: same machine load
            # (fresh folder names: MLflow keeps one database engine per URI for the process)
            runs = [
                (base, root / f"copy{i}", lambda out: _copy_baseline(train, out)),
                (ours, root / f"reg{i}", lambda out: _register_and_pull(train, template, out)),
            ]
            for times, out, fn in runs[:: 1 if i % 2 == 0 else -1]:
                # Each starts with no dirty pages: otherwise the second one waits for the kernel
                # to write back what the first one wrote (seconds on this disk).
                os.sync()
                times.append(fn(out))
                shutil.rmtree(out)
    return [
        Result(
            name=f"registry register+pull {mb}MB",
            baseline="shutil.copy in + out",
            baseline_s=min(base),
            ours_s=min(ours),
            target=0.5,
            note=f"2 layouts x {mb} MB; pull hashes every byte",
        )
    ]


def _register_and_pull(train: Path, template: Path, root: Path) -> float:
    from registry.pull import pull
    from registry.register import register_adapter
    from registry.store import local_tracking_uri, open_client

    mlflow_dir = root / ".mlflow"
    mlflow_dir.mkdir(parents=True)
    shutil.copy(template, mlflow_dir / "mlflow.db")
    client = open_client(local_tracking_uri(mlflow_dir), mlflow_dir / "artifacts")
    start = time.perf_counter()
    reg = register_adapter(
        client, name="bench.adapter", train_dir=train, eval_dir=None, experiment="ltx-lora"
    )
    pull(client, reg.name, str(reg.version), "comfyui", root / "pulled")
    return time.perf_counter() - start


def _copy_baseline(train: Path, root: Path) -> float:
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
