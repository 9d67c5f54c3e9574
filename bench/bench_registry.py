"""Register + verified pull of a large adapter against plain file copies of the same bytes.

The adapter is what training writes: a diffusers and a ComfyUI file of LTX_LORA_BENCH_MB each
(default 400, the size of a rank-32 LoRA of the 19B model). Ours: `register_adapter` into a
fresh local registry (hash, upload, manifest, model version) then `pull --format comfyui`
(download, size + sha256 check, atomic rename). Baseline: `shutil.copy` of both files into a
store folder, then of the ComfyUI file out of it. Same run, same page cache, best of 2.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import Result

SIZE_ENV = "LTX_LORA_BENCH_MB"
REPEATS = 2


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
        for i in range(REPEATS):  # interleaved: both see the same machine load
            base.append(_copy_baseline(train, root / f"copy{i}"))
            ours.append(_register_and_pull(train, template, root / f"reg{i}"))
    return [
        Result(
            name=f"registry register+pull {mb}MB",
            baseline="shutil.copy in + out",
            baseline_s=min(base),
            ours_s=min(ours),
            target=0.5,
            note=f"2 layouts x {mb} MB; sha256 on both sides",
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
    """A training folder whose two adapter files are valid safetensors of `mb` MB each."""
    (root / "adapter").mkdir(parents=True)
    for i, name in enumerate(("adapter.safetensors", "comfyui.safetensors")):
        _safetensors(root / "adapter" / name, mb << 20, seed=i)
    lineage = dict.fromkeys(
        ["dataset_hash", "base_model", "base_model_hash", "config_hash", "git_commit"], "bench"
    )
    record = {"run_name": "bench", "lineage": {**lineage, "ltx_version": "2.0"}}
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
