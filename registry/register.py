"""Register a trained adapter: one MLflow run with its files, then a model version with an alias.

All or nothing: the registered model and its version are made only after every file is uploaded
and checked, and a failure at any point removes what this call made.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.compat import record_tested
from registry.duplicate import duplicate_message
from registry.errors import one_line_errors
from registry.inputs import (
    ADAPTER_DIR,
    ADAPTER_FILE,
    TRAIN_RECORD,
    EvalRun,
    TrainRun,
    file_manifest,
    load_eval,
    load_train,
)
from registry.names import LINEAGE_TAGS, check_alias, split_model_name
from registry.retry import VERSION_ATTEMPTS, backoff, transient
from registry.run_files import LINK_ENV, log_dataset, log_values, protect_files, upload_files
from registry.scan import check_adapter
from registry.store import client_workspace, ensure_experiment, registration_lock
from registry.version_record import describe_adapter, file_tags, version_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
# Importable from here as before the split (tests, ltx_lora): the names moved modules.
__all__ = ["LINEAGE_TAGS", "LINK_ENV", "VERSION_ATTEMPTS", "Registration", "register_adapter"]


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
    with (
        one_line_errors(f"register {name}", client.tracking_uri, client_slug),
        client_workspace(client, client_slug),
        registration_lock(client, name, sha),  # a local store: one of the same adapter at once
    ):
        existing = find_version(client, name, sha)
        if existing is not None:
            return _duplicate(client, name, existing, alias, sha, train, evaluation)
        return _register_new(
            client, name, alias, experiment, train, evaluation, manifest, dataset_card
        )


def _duplicate(
    client: MlflowClient,
    name: str,
    version: str,
    alias: str,
    sha: str,
    train: TrainRun,
    evaluation: EvalRun,
) -> Registration:
    """The version that already holds this adapter, refused as a duplicate."""
    reg = existing_registration(client, name, version, alias, sha, train)
    reg = record_tested(client, reg, evaluation)  # evaluated on another base version
    log.info("%s", reg.message)
    return reg


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
            upload = pool.submit(upload_files, client, run_id, train, evaluation, manifest, card)
            try:
                log_values(client, run_id, train, evaluation)
                log_dataset(client, run_id, train, card)
            finally:
                wait([upload])  # never roll back under a running upload
            upload.result()  # its error, if any
        undo.model_created = _ensure_registered_model(client, name, client_slug, adapter_slug)
        version = create_version_with_retry(
            client,
            name,
            source=f"{run.info.artifact_uri}/{ADAPTER_DIR}",
            run_id=run_id,
            tags={**tags, **file_tags(manifest), "run_id": run_id},
            description=description,
        )
        undo.version = version.version
        winner = find_version(client, name, sha)
        if winner != str(version.version):
            undo.rollback()  # a concurrent registration of these bytes made its version first
            return _duplicate(client, name, str(winner), alias, sha, train, evaluation)
        _set_alias_with_retry(client, name, alias, version.version)
        client.set_terminated(run_id, "FINISHED")
        protect_files(client, run_id)
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
            if not transient(e) or attempt + 1 == attempts:
                raise
            log.info("version of %s not created (%s); retrying", name, e.error_code)
        time.sleep(backoff(attempt))
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
            if not transient(e) or attempt + 1 == VERSION_ATTEMPTS:
                raise
            log.info("alias %s of %s not set (%s); retrying", alias, name, e.error_code)
        time.sleep(backoff(attempt))


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
