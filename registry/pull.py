"""Pull an adapter by alias or version, verified file by file against what its version records.

A pulled file appears under its final name only after its size and sha256 match the version's
`file.<name>` tags (registry.version_record; `files.json` beside the files must agree): a
tampered, truncated or half-downloaded file never reaches the destination, and an earlier pull
in the same place stays as it was. Downloads stage outside the destination (registry.staging)
and land by one rename. Needs nothing but `mlflow-skinny` (no torch).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from registry.compat import check_base
from registry.describe import fetch_version
from registry.digest import copy_hashed
from registry.errors import one_line_errors
from registry.inputs import ADAPTER_DIR, ADAPTER_FILE, check_safetensors
from registry.licence import audience_of, require
from registry.names import split_model_name
from registry.read import read_manifest
from registry.staging import land, staging_for
from registry.store import client_workspace
from registry.version_record import recorded_files
from stagekit.errors import UserError
from stagekit.files import disk_full_errors, write_json
from stagekit.hashing import sha256_file

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Consumer → the stem of its registered file (ltx.exports.FILE_STEMS; the registry imports no
# ltx, tests/unit/test_registry_pull_consumers.py keeps the two equal) and the name a pull
# gives it. diffusers' `load_lora_weights(DIR)` looks for pytorch_lora_weights.safetensors;
# ComfyUI lists every file of its loras folder, so that one is named for the model.
CONSUMERS = {"comfyui": "comfyui", "ltx-pipelines": "ltx-pipelines", "diffusers": "adapter"}
FORMATS = CONSUMERS  # the old name (`--format`)
DIFFUSERS_NAME = "pytorch_lora_weights.safetensors"
EXPORTS_RECORD = "exports.json"
# Tests only: copy from a local store at this many bytes a second, so a test can kill a pull
# part-way through at a byte offset it chooses.
THROTTLE_ENV = "LTX_LORA_TEST_PULL_BPS"


@dataclass(frozen=True)
class Pulled:
    """What `pull` wrote: the adapter file, its sidecar record, and which version it is."""

    name: str
    version: int
    run_id: str
    format: str
    path: Path
    record: Path
    sha256: str
    bytes: int
    warning: str | None = None  # e.g. used on another base version (--allow-cross-version)


def pull(
    client: MlflowClient,
    name: str,
    ref: str,
    fmt: str,
    dest: Path,
    *,
    ema: bool = False,
    base: str | None = None,
    allow_cross_version: bool = False,
) -> Pulled:
    """Download `name@ref`'s file for consumer `fmt` (comfyui, ltx-pipelines, diffusers) into
    `dest/`, verified against the version's files.json; a consumer the export refused is a
    UserError with its reason. Also writes `dest/<name>.pull.json` (name, version, sha256, when).
    A client-facing alias (`champion`) needs a version whose licence record allows `client`
    distribution; `base` (an LTX version) must be one the adapter was trained or evaluated on
    unless `allow_cross_version` (registry.compat)."""
    if fmt not in CONSUMERS:
        raise UserError(f"unknown consumer {fmt!r}: use one of {', '.join(CONSUMERS)}")
    slug = split_model_name(name)[0]
    with (
        one_line_errors(f"pull of {name}@{ref}", client.tracking_uri, slug),
        client_workspace(client, slug),
    ):
        mv = fetch_version(client, name, ref)
        require(mv, audience_of(ref), f"pull of {name}@{ref}")
        warning = check_base(mv, base, allow_cross_version)
        target = Path(dest) / target_name(name, fmt)
        entry = fetch_verified(client, mv, fmt, target, ema=ema)
    record = Path(dest) / f"{name}.pull.json"
    pulled = Pulled(
        name,
        int(mv.version),
        mv.run_id,
        fmt,
        target,
        record,
        entry["sha256"],
        int(entry["bytes"]),
        warning,
    )
    info = asdict(pulled) | {"path": str(target), "record": str(record), "ref": ref}
    write_json(record, info | {"pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return pulled


def fetch_verified(
    client: MlflowClient, mv: Any, consumer: str, target: Path, *, ema: bool = False
) -> dict[str, Any]:
    """Write `mv`'s file for `consumer` to `target` (atomically, verified); its recorded entry.
    The caller picks the workspace."""
    manifest = recorded_manifest(client, mv)
    suffix = "_ema" if ema else ""
    wanted = CONSUMERS[consumer] + suffix + ".safetensors"
    _check_not_refused(client, mv, manifest, consumer, suffix)
    if wanted not in manifest:
        raise UserError(
            f"{mv.name} version {mv.version} has no {wanted} ({consumer}"
            f"{', EMA' if ema else ''}): its files are {', '.join(sorted(manifest))}; "
            "versions registered before per-consumer exports have no ltx-pipelines file: "
            "retrain to make one"
        )
    _download_verified(client, mv, wanted, manifest[wanted], target)
    return manifest[wanted]


def recorded_manifest(client: MlflowClient, mv: Any) -> dict[str, dict[str, Any]]:
    """`{file: {"sha256", "bytes"}}` as the version records it (its tags are the authority);
    a UserError naming both hashes where the stored `files.json` disagrees with them: the list
    beside the files was rewritten, most likely with the files."""
    manifest = read_manifest(client, mv)
    tags = dict(mv.tags or {})
    recorded = recorded_files(tags)
    if not recorded and tags.get("adapter_sha256") and ADAPTER_FILE in manifest:
        # registered before per-file tags: the adapter's own sha256 tag still holds it
        entry = manifest[ADAPTER_FILE]
        recorded = {ADAPTER_FILE: {"sha256": tags["adapter_sha256"], "bytes": entry["bytes"]}}
    for rel, entry in recorded.items():
        stored = manifest.get(rel, {})
        said = (stored.get("sha256"), int(stored.get("bytes", -1)))
        if said != (entry["sha256"], entry["bytes"]):
            raise UserError(
                f"{mv.name} version {mv.version}: {rel} is sha256 {stored.get('sha256')} "
                f"({stored.get('bytes')} bytes) in the stored files.json but the version records "
                f"sha256 {entry['sha256']} ({entry['bytes']} bytes): the store was altered; "
                "nothing was written"
            )
    return manifest | recorded


def target_name(name: str, consumer: str) -> str:
    if consumer == "diffusers":
        return DIFFUSERS_NAME
    return f"{name}.safetensors" if consumer == "comfyui" else f"{name}.{consumer}.safetensors"


def _check_not_refused(
    client: MlflowClient, mv: Any, manifest: dict[str, Any], consumer: str, suffix: str
) -> None:
    """A UserError with the export's own reason when training refused this consumer a file
    (`exports.json`: e.g. a DoRA for ltx-pipelines, which would drop its magnitude)."""
    record_name = EXPORTS_RECORD.replace(".json", f"{suffix}.json")
    if record_name not in manifest:
        return  # registered before per-consumer exports
    tmp = Path(tempfile.mkdtemp(prefix=".exports.", suffix=".pull"))
    try:
        local, digest = _fetch(client, mv, f"{ADAPTER_DIR}/{record_name}", tmp)
        verify_file(local, manifest[record_name], f"{mv.name} version {mv.version}", digest, False)
        cell = json.loads(local.read_text(encoding="utf-8"))["consumers"].get(consumer, {})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if cell.get("outcome") == "refused":
        raise UserError(f"{mv.name} version {mv.version}: {cell['reason']}")


def _download_verified(
    client: MlflowClient, mv: Any, rel: str, entry: dict[str, Any], target: Path
) -> None:
    """Download into a staging folder outside the destination, check size and sha256, then
    rename into place."""
    label = f"{mv.name} version {mv.version}: {rel}"
    with disk_full_errors(target), staging_for(target.parent) as tmp:
        local, digest = _fetch(client, mv, f"{ADAPTER_DIR}/{rel}", tmp)
        verify_file(local, entry, label, digest)
        local.chmod(0o644)
        land(local, target)


def _fetch(client: MlflowClient, mv: Any, rel: str, tmp: Path) -> tuple[Path, str | None]:
    """Download one artifact into `tmp`; also its sha256 when the copy computed it.

    From a local (file://) store the bytes are hashed as they are written (one read pass;
    MLflow's own local download goes through a thread pool and is several times slower).
    From a server MLflow downloads and the file is hashed afterwards."""
    uri = client.get_run(mv.run_id).info.artifact_uri
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return Path(client.download_artifacts(mv.run_id, rel, str(tmp))), None
    source = Path(unquote(parsed.path)) / rel
    if not source.is_file():
        raise UserError(f"{mv.name} version {mv.version}: {rel} is missing from the store")
    local = tmp / Path(rel).name
    if rate := os.environ.get(THROTTLE_ENV):
        return local, _throttled_copy(source, local, int(rate))
    return local, copy_hashed(source, local)[0]


def _throttled_copy(source: Path, local: Path, bytes_per_s: int) -> None:
    """THROTTLE_ENV's slow copy (tests): 4 KiB at a time, flushed, at `bytes_per_s`."""
    chunk = 4096
    with open(source, "rb") as fin, open(local, "wb") as fout:
        while data := fin.read(chunk):
            fout.write(data)
            fout.flush()
            time.sleep(len(data) / bytes_per_s)


def verify_file(
    path: Path,
    entry: dict[str, Any],
    label: str,
    digest: str | None = None,
    safetensors: bool = True,
) -> None:
    """A UserError unless `path` has the registered size and sha256 (and is safetensors, where
    `safetensors`). `digest`: the sha256 of `path` when the copy that wrote it computed it."""
    size = path.stat().st_size
    if size != int(entry["bytes"]):
        raise UserError(
            f"{label} is {size} bytes, registered as {entry['bytes']}: truncated or altered in "
            "the artifact store; nothing was written (re-register the adapter)"
        )
    digest = digest or sha256_file(path)
    if digest != entry["sha256"]:
        raise UserError(
            f"{label} has sha256 {digest}, the version records {entry['sha256']}: the stored "
            "file was altered; nothing was written (re-register the adapter)"
        )
    if safetensors:
        check_safetensors(path)
