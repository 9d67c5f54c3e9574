"""Register a trained adapter: one MLflow run with its files, then a model version with an alias.

All or nothing: the registered model and its version are made only after every file is uploaded
and checked, and a failure at any point removes what this call made.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.compat import record_tested, tested_tags
from registry.digest import clone
from registry.duplicate import duplicate_message
from registry.inputs import (
    ADAPTER_DIR,
    ADAPTER_FILE,
    MANIFEST_NAME,
    TRAIN_RECORD,
    EvalRun,
    TrainRun,
    file_manifest,
    load_eval,
    load_train,
)
from registry.licence import licence_tags
from registry.names import EVAL_SUITE_TAG, LINEAGE_TAGS, check_alias, split_model_name
from registry.scan import check_adapter
from registry.store import client_workspace, ensure_experiment
from stagekit.hashing import sha256_json

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

_BATCH = 100  # MLflow's limit on params and tags per log_batch call (metrics: 1000)
_METRIC_BATCH = 1000
VERSION_ATTEMPTS = 8
_TRANSIENT = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"}
LINK_ENV = "LTX_LORA_REGISTRY_LINK"  # 1: hard-link adapter files into a local store (no copy)


@dataclass(frozen=True)
class Registration:
    """What `register_adapter` did. `alias` is None when an earlier version already held the
    adapter and the alias now points elsewhere (re-registering moves nothing)."""

    name: str
    version: int
    alias: str | None
    run_id: str
    adapter_sha256: str
    created: bool
    message: str = ""  # why nothing was registered (a duplicate), for the CLI and the log


def register_adapter(
    client: MlflowClient,
    *,
    name: str,
    train_dir: Path,
    eval_dir: Path | None,
    experiment: str,
    alias: str = "candidate",
    dataset_card: dict[str, Any] | None = None,
) -> Registration:
    """File `train_dir`'s adapter as a new version of `name` (`<client>.<adapter>`) and point
    `alias` at it. An adapter that fails the tensor scan (registry.scan) is refused before
    anything is written; one whose sha256 a version already holds (the same weights and header
    lineage) is refused as a duplicate: that version comes back with `created=False` and a
    `message` naming it, so re-running a pipeline stays a no-op."""
    client_slug = split_model_name(name)[0]
    check_alias(alias)
    train = load_train(Path(train_dir))
    check_adapter(train.adapter_files)  # NaN / Inf / all-zero / below noise: refused here
    evaluation = load_eval(Path(eval_dir) if eval_dir is not None else None)
    manifest = file_manifest(
        train.adapter_files, train.recorded_digests(), train.dir / TRAIN_RECORD
    )
    sha = manifest[ADAPTER_FILE]["sha256"]
    with client_workspace(client, client_slug):
        existing = find_version(client, name, sha)
        if existing is not None:
            reg = existing_registration(client, name, existing, alias, sha, train)
            reg = record_tested(client, reg, evaluation)  # evaluated on another base version
            log.info("%s", reg.message)
            return reg
        return _register_new(
            client, name, alias, experiment, train, evaluation, manifest, dataset_card
        )


def _register_new(
    client: MlflowClient,
    name: str,
    alias: str,
    experiment: str,
    train: TrainRun,
    evaluation: EvalRun,
    manifest: dict[str, dict[str, Any]],
    card: dict[str, Any] | None,
) -> Registration:
    """The run, its files, the registered model and the version: all of it, or none of it."""
    client_slug, adapter_slug = split_model_name(name)
    sha = manifest[ADAPTER_FILE]["sha256"]
    experiment_id = ensure_experiment(client, experiment)
    description = describe_adapter(train, evaluation, card)
    tags = version_tags(train, evaluation, sha, card)
    undo = _Undo(client, name)
    try:
        run = client.create_run(
            experiment_id,
            run_name=train.record.run_name,
            tags={**tags, "ltx_lora.model": name, "mlflow.note.content": description},
        )
        run_id = undo.run_id = run.info.run_id
        with ThreadPoolExecutor(max_workers=1) as pool:
            # The files go up while the run's values are logged: both mostly wait on I/O.
            upload = pool.submit(_upload_files, client, run_id, train, evaluation, manifest, card)
            try:
                _log_values(client, run_id, train, evaluation)
                _log_dataset(client, run_id, train, card)
            finally:
                wait([upload])  # never roll back under a running upload
            upload.result()  # its error, if any
        undo.model_created = _ensure_registered_model(client, name, client_slug, adapter_slug)
        version = create_version_with_retry(
            client,
            name,
            source=f"{run.info.artifact_uri}/{ADAPTER_DIR}",
            run_id=run_id,
            tags={**tags, "run_id": run_id},
            description=description,
        )
        undo.version = version.version
        _set_alias_with_retry(client, name, alias, version.version)
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        undo.rollback()  # then re-raise: the caller sees the original error
        raise
    return Registration(name, int(version.version), alias, run_id, sha, created=True)


def create_version_with_retry(
    client: MlflowClient,
    name: str,
    *,
    source: str,
    run_id: str,
    tags: dict[str, str],
    description: str,
    attempts: int = VERSION_ATTEMPTS,
) -> Any:
    """`create_model_version`, retried with jittered backoff. Version numbers are max+1, so
    processes registering at once collide (MLflow retries only 3 times, without a pause); a
    retry first looks for a version of this run, so an answer lost in transit adds no twin."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return client.create_model_version(
                name, source=source, run_id=run_id, tags=tags, description=description
            )
        except MlflowException as e:
            if not _transient(e) or attempt + 1 == attempts:
                raise
            log.info("version of %s not created (%s); retrying", name, e.error_code)
        time.sleep(min(8.0, 0.2 * 2**attempt) * (0.5 + random.random()))
        made = client.search_model_versions(f"name = '{name}' AND run_id = '{run_id}'")
        if made:
            return made[0]
    raise AssertionError("unreachable")


def _set_alias_with_retry(client: MlflowClient, name: str, alias: str, version: str) -> None:
    """Setting an alias is idempotent, so a server hiccup is retried (seen under eight
    simultaneous registrations: an INTERNAL_ERROR from the server's alias handler)."""
    from mlflow.exceptions import MlflowException

    for attempt in range(VERSION_ATTEMPTS):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException as e:
            if not _transient(e) or attempt + 1 == VERSION_ATTEMPTS:
                raise
            log.info("alias %s of %s not set (%s); retrying", alias, name, e.error_code)
        time.sleep(min(8.0, 0.2 * 2**attempt) * (0.5 + random.random()))


def _transient(error: Exception) -> bool:
    """A version-number race, a concurrent insert of the same row (the server's upserts are
    look-up-then-insert) or a server-side hiccup: worth another try."""
    code = getattr(error, "error_code", "")
    text = str(error)
    return code in _TRANSIENT or "Model Version creation error" in text or _collided(text)


def _collided(text: str) -> bool:
    return "UniqueViolation" in text or "unique constraint" in text.lower()


def find_version(client: MlflowClient, name: str, adapter_sha256: str) -> str | None:
    """The lowest version of `name` tagged with this adapter sha256, or None."""
    found = client.search_model_versions(
        f"name = '{name}' AND tags.adapter_sha256 = '{adapter_sha256}'"
    )
    return str(min(int(v.version) for v in found)) if found else None


def existing_registration(
    client: MlflowClient,
    name: str,
    version: str,
    alias: str,
    sha: str,
    train: TrainRun | None = None,
) -> Registration:
    """The Registration of a version made earlier, refused as a duplicate; nothing is changed."""
    mv = client.get_model_version(name, version)  # search results carry no aliases
    held = alias if alias in (mv.aliases or []) else None
    lineage = train.record.lineage if train is not None else None
    message = duplicate_message(name, mv, sha, lineage, LINEAGE_TAGS)
    return Registration(name, int(mv.version), held, mv.run_id, sha, False, message)


def version_tags(
    train: TrainRun, evaluation: EvalRun, sha: str, card: dict[str, Any] | None
) -> dict[str, str]:
    """Lineage, verdict and one `score.<name>` per eval score, all as strings."""
    lineage = train.record.lineage
    tags = {key: str(getattr(lineage, key)) for key in LINEAGE_TAGS}
    tags["adapter_sha256"] = sha
    tags["verdict"] = evaluation.record.verdict
    tags.update({f"score.{k}": repr(v) for k, v in sorted(evaluation.record.scores.items())})
    suite = eval_suite(evaluation)
    if suite is not None:
        tags[EVAL_SUITE_TAG] = suite
    strength = (evaluation.record.model_extra or {}).get("adapter_strength")
    if strength is not None:  # what the scores were measured at: apply it at this strength
        tags["adapter_strength"] = repr(float(strength))
    if card and card.get("trigger"):
        tags["trigger"] = str(card["trigger"])  # what a prompt must contain to use the adapter
    rights, warnings = licence_tags(card, lineage.base_model, lineage.ltx_version)
    for warning in warnings:
        log.warning("%s", warning)
    return tags | rights | tested_tags(evaluation, suite)


def eval_suite(evaluation: EvalRun) -> str | None:
    """A short hash of what the scores were measured on (scorer backend, prompts and seeds,
    number of references, the rule): scores compare only between versions with the same one."""
    extra = evaluation.record.model_extra or {}
    if evaluation.record.verdict == "unscored" and not evaluation.record.scores:
        return None
    samples = [s for s in extra.get("per_sample") or [] if isinstance(s, dict)]
    suite = {
        "backend": extra.get("backend"),
        "prompts": sorted({f"{s.get('prompt')}|{s.get('seed')}" for s in samples}),
        "n_references": extra.get("n_references"),
        "rule": extra.get("rule"),
        "scores": sorted(evaluation.record.scores),
    }
    return sha256_json(suite)[:16]


def _log_dataset(
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
            if not _collided(str(e)) or attempt == VERSION_ATTEMPTS - 1:
                raise
            log.info("dataset input of run %s collided with a concurrent insert; retrying", run_id)
            time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))


def describe_adapter(train: TrainRun, evaluation: EvalRun, card: dict[str, Any] | None) -> str:
    """A few readable lines: the data, the base model, the training, the verdict and scores."""
    lin, rec = train.record.lineage, train.record
    return "\n".join(
        [
            f"LoRA adapter for LTX-2 base model `{lin.base_model}` "
            f"(hash {_short(lin.base_model_hash)}, ltx {lin.ltx_version}).",
            _data_line(lin.dataset_hash, card),
            _training_line(rec.run_name, rec.params, rec.final),
            _eval_line(evaluation),
            f"Code: git {_short(lin.git_commit)}, config {_short(lin.config_hash)}.",
        ]
    )


def _data_line(dataset_hash: str, card: dict[str, Any] | None) -> str:
    line = f"Data: dataset {_short(dataset_hash)}"
    if card:
        who = card.get("owner") or card.get("client", "?")
        line += f", {who}'s clips of a {card.get('class_noun', 'subject')}"
        if card.get("trigger"):
            line += f", trigger word `{card['trigger']}`"
        if card.get("rights"):
            line += f"; rights: {card['rights']}"
    return line + "."


def _training_line(run_name: str, params: dict[str, Any], final: dict[str, float]) -> str:
    keys = ("rank", "alpha", "lr", "learning_rate", "steps", "max_steps")
    shown = [f"{k} {params[k]}" for k in keys if k in params]
    shown += [f"final {k} {_num(v)}" for k, v in sorted(final.items())]
    return f"Training: run {run_name}" + (f"; {', '.join(shown)}." if shown else ".")


def _eval_line(evaluation: EvalRun) -> str:
    rec = evaluation.record
    if rec.verdict == "unscored" and not rec.scores:
        return "Evaluation: none (unscored)."
    scores = ", ".join(f"{k} {_num(v)}" for k, v in sorted(rec.scores.items()))
    return f"Evaluation: verdict {rec.verdict}" + (f"; scores: {scores}." if scores else ".")


def _log_values(client: MlflowClient, run_id: str, train: TrainRun, evaluation: EvalRun) -> None:
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


def _upload_files(
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


def _ensure_registered_model(client: MlflowClient, name: str, owner: str, adapter: str) -> bool:
    """Create the registered model if absent; True if this call created it."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name,
            tags={"client": owner, "adapter": adapter},
            description=f"LTX-2 LoRA adapter `{adapter}` for client `{owner}`. "
            "Each version carries lineage tags; aliases: candidate, champion.",
        )
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return False
    return True


class _Undo:
    """What one registration made so far, and how to remove it again."""

    def __init__(self, client: MlflowClient, name: str) -> None:
        self.client, self.name = client, name
        self.run_id: str | None = None
        self.model_created = False
        self.version: str | None = None

    def rollback(self) -> None:
        """Remove the version, the registered model if this call made it, and the run's files.
        Each step is tried on its own so one failure does not keep the others from running."""
        if self.version is not None:
            self._try(self.client.delete_model_version, self.name, self.version)
        if self.model_created:
            self._try(self._delete_model_if_empty)
        if self.run_id is not None:
            self._try(self.client.set_terminated, self.run_id, "FAILED")
            self._try(self.client.delete_run, self.run_id)  # soft: kept for a post-mortem
            self._try(self._delete_files, self.run_id)

    def _delete_model_if_empty(self) -> None:
        # Another process may have added a version meanwhile: keep the model then.
        if not self.client.search_model_versions(f"name = '{self.name}'"):
            self.client.delete_registered_model(self.name)

    def _delete_files(self, run_id: str) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(self.client.get_run(run_id).info.artifact_uri).delete_artifacts()

    @staticmethod
    def _try(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("registry rollback: %s%r failed", getattr(fn, "__name__", fn), args)


def _dump(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    return path


def _short(value: str) -> str:
    return value[:12] if len(value) > 12 else value


def _num(value: float) -> str:
    return f"{value:.4g}"
