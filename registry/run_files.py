"""What goes into a registration's MLflow run: params and metrics, the dataset input, and the
files (uploaded, or copied kernel-side into a local store), checked to have all arrived."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.digest import clone
from registry.inputs import ADAPTER_DIR, MANIFEST_NAME, EvalRun, TrainRun
from registry.retry import VERSION_ATTEMPTS, collided

if TYPE_CHECKING:
    from mlflow import MlflowClient

_BATCH = 100  # MLflow's limit on params and tags per log_batch call (metrics: 1000)
_METRIC_BATCH = 1000
LINK_ENV = "LTX_LORA_REGISTRY_LINK"  # 1: hard-link adapter files into a local store (no copy)

log = logging.getLogger(__name__)


def log_dataset(
    client: MlflowClient, run_id: str, train: TrainRun, card: dict[str, Any] | None
) -> None:
    """The training data as an MLflow dataset input, its digest the DVC-tracked data's hash."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    lineage = train.record.lineage
    name = str(getattr(lineage, "dataset", None) or (card or {}).get("adapter") or "dataset")
    source = {"dataset_hash": lineage.dataset_hash, "tracked_by": "dvc"}
    dataset = Dataset(
        name=name,
        digest=lineage.dataset_hash[:36],  # MLflow's limit on a digest
        source_type="dvc",
        source=json.dumps(source, sort_keys=True),
    )
    context = InputTag("mlflow.data.context", "training")
    _log_inputs_with_retry(client, run_id, [DatasetInput(dataset, tags=[context])])


def _log_inputs_with_retry(client: MlflowClient, run_id: str, inputs: list[Any]) -> None:
    """The server creates a dataset row by look-up-then-insert, so two runs of the same data
    logged at once can both insert and one gets a unique-key error; a retry finds the row."""
    from mlflow.exceptions import MlflowException

    for attempt in range(VERSION_ATTEMPTS):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as e:
            if not collided(str(e)) or attempt == VERSION_ATTEMPTS - 1:
                raise
            log.info("dataset input of run %s collided with a concurrent insert; retrying", run_id)
            time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))


def log_values(client: MlflowClient, run_id: str, train: TrainRun, evaluation: EvalRun) -> None:
    """Params, per-step training metrics, final metrics and eval scores, in batches."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    params = [Param(k, str(v)) for k, v in sorted(train.record.params.items())]
    for i in range(0, len(params), _BATCH):
        client.log_batch(run_id, params=params[i : i + _BATCH])
    last = train.steps[-1].step if train.steps else 0
    metrics = [Metric(k, v, now, s.step) for s in train.steps for k, v in s.values.items()]
    metrics += [Metric(f"final.{k}", v, now, last) for k, v in train.record.final.items()]
    metrics += [Metric(f"score.{k}", v, now, 0) for k, v in evaluation.record.scores.items()]
    for i in range(0, len(metrics), _METRIC_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + _METRIC_BATCH])


def upload_files(
    client: MlflowClient,
    run_id: str,
    train: TrainRun,
    evaluation: EvalRun,
    manifest: dict[str, dict[str, Any]],
    card: dict[str, Any] | None,
) -> None:
    """Upload adapter/ (+ its files.json), train.json, config.yaml, eval/ and the dataset card,
    then check every file arrived with its size: a version must never point at missing files."""
    with tempfile.TemporaryDirectory(prefix="ltx-lora-register-") as tmp:
        written = {f"{ADAPTER_DIR}/{MANIFEST_NAME}": _dump(Path(tmp) / MANIFEST_NAME, manifest)}
        if card is not None:
            written["dataset_card.json"] = _dump(Path(tmp) / "dataset_card.json", card)
        files = {f"{ADAPTER_DIR}/{rel}": p for rel, p in train.adapter_files.items()}
        files |= train.extra_files | evaluation.files | written
        _put_files(client, run_id, files)
        expected = {rel: local.stat().st_size for rel, local in files.items()}
    uploaded = _artifact_sizes(client, run_id)
    wrong = sorted(rel for rel, size in expected.items() if uploaded.get(rel) != size)
    if wrong:
        raise RuntimeError(f"artifact upload incomplete for run {run_id}: {', '.join(wrong)}")


def _put_files(client: MlflowClient, run_id: str, files: dict[str, Path]) -> None:
    """Upload each file to its run-relative path. A local (file://) store gets a hard link for
    the adapter files and a kernel-side copy for the rest (MLflow's local repository copies
    through Python buffers, several times slower)."""
    from urllib.parse import unquote, urlparse

    uri = client.get_run(run_id).info.artifact_uri
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        for rel, local in files.items():
            client.log_artifact(run_id, str(local), rel.rpartition("/")[0] or None)
        return

    def put(rel: str) -> None:
        dest = Path(unquote(parsed.path)) / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(files[rel], dest, link=_is_adapter_file(rel))

    # One at a time: two large copies side by side pushed this disk into a slow-write regime
    # (the following 400 MB write took 1.2 s instead of 0.35 s; bench/bench_registry.py).
    for rel in files:
        put(rel)


def _is_adapter_file(rel: str) -> bool:
    return rel.startswith(f"{ADAPTER_DIR}/") and rel.endswith(".safetensors")


def _link_or_copy(src: Path, dest: Path, *, link: bool) -> None:
    """A reflink where the filesystem has them (XFS, btrfs: no bytes copied, still a separate
    file), else a kernel-side copy; with LINK_ENV=1 a hard link for adapter files where the
    filesystem allows. Hard links are not the default: the training folder's file and the stored
    artifact are then one file, and `cp other.safetensors adapter/…` (which rewrites in place)
    would change the registered version too. Pulls would refuse it (every byte is checked), but
    the version's bytes would be gone. Opt in where training folders are never written by hand."""
    if link and os.environ.get(LINK_ENV, "") in ("1", "true"):
        try:
            os.link(src, dest)
            return
        except OSError:  # another filesystem, no hard links there, or not permitted
            pass
    if not clone(src, dest):
        shutil.copyfile(src, dest)


def _artifact_sizes(client: MlflowClient, run_id: str, path: str | None = None) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            sizes |= _artifact_sizes(client, run_id, info.path)
        else:
            sizes[info.path] = info.file_size
    return sizes


def _dump(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def protect_files(client: MlflowClient, run_id: str) -> None:
    """A registered version's files in a local store become read-only (0444): `cp` over one,
    or an editor saving it, fails instead of changing the version. A hard-linked adapter
    (LINK_ENV) is left as it is: its mode is the training folder's file's too. Pulls check
    every byte against the version's tags regardless (root ignores modes)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(client.get_run(run_id).info.artifact_uri)
    if parsed.scheme != "file":
        return  # a server: its write rule (registry.server_guard) protects them
    for path in Path(unquote(parsed.path)).rglob("*"):
        if path.is_file() and path.stat().st_nlink == 1:
            path.chmod(0o444)
