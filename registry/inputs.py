"""What `register` reads: a training run folder and, when there is one, an evaluation folder.

Everything is validated here, before any MLflow call, so a bad input never leaves a half-made run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from registry.digest import hash_files, reusable_digest
from stagekit.errors import UserError

ADAPTER_DIR = "adapter"
ADAPTER_FILE = "adapter.safetensors"
MANIFEST_NAME = "files.json"
TRAIN_RECORD = "train.json"
TRAIN_METRICS = "metrics.jsonl"
TRAIN_CONFIG = "config.yaml"
EVAL_METRICS = "metrics.json"
EVAL_FILES = ("metrics.json", "report.html", "samples")
_MAX_HEADER = 100 << 20  # a safetensors header is JSON; anything this large is not one

# The characters MLflow accepts in metric and param keys.
Key = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\-/: ]{1,200}$")]
Scalar = bool | int | float | str
M = TypeVar("M", bound=BaseModel)


class Lineage(BaseModel):
    """Where an adapter came from; each field becomes a version tag."""

    model_config = ConfigDict(extra="allow")

    dataset_hash: str = Field(min_length=1)
    base_model: str = Field(min_length=1)
    base_model_hash: str = Field(min_length=1)
    config_hash: str = Field(min_length=1)
    git_commit: str = Field(min_length=1)
    ltx_version: str = Field(min_length=1)


class TrainRecord(BaseModel):
    """`train.json`. Extra keys are allowed: the trainer may record more than the registry reads."""

    model_config = ConfigDict(extra="allow")

    run_name: str = Field(min_length=1)
    lineage: Lineage
    params: dict[Key, Scalar] = Field(default_factory=dict)
    final: dict[Key, float] = Field(default_factory=dict)


class EvalRecord(BaseModel):
    """`metrics.json` of an evaluation; `unscored` when there was no evaluation."""

    model_config = ConfigDict(extra="allow")

    verdict: Literal["pass", "fail", "unscored"]
    scores: dict[Key, float] = Field(default_factory=dict)


@dataclass(frozen=True)
class StepMetrics:
    step: int
    values: dict[str, float]


@dataclass(frozen=True)
class TrainRun:
    """A validated training folder. `adapter_files`: path inside adapter/ → local file."""

    dir: Path
    record: TrainRecord
    adapter_files: dict[str, Path]
    steps: list[StepMetrics]
    extra_files: dict[str, Path]  # run-relative artifact path → local file (train.json, config)

    def recorded_digests(self) -> dict[str, str]:
        """The sha256 per adapter file name that training wrote into train.json (`files`)."""
        files = (self.record.model_extra or {}).get("files")
        if not isinstance(files, dict):
            return {}
        return {str(k): v for k, v in files.items() if isinstance(v, str)}


@dataclass(frozen=True)
class EvalRun:
    record: EvalRecord
    files: dict[str, Path] = field(default_factory=dict)  # run-relative artifact path → local file


def load_train(train_dir: Path) -> TrainRun:
    """Validate `train_dir`: adapter/adapter.safetensors, train.json, metrics.jsonl, config.yaml."""
    train_dir = Path(train_dir)
    adapter_dir = train_dir / ADAPTER_DIR
    adapter = adapter_dir / ADAPTER_FILE
    if not adapter.is_file():
        raise UserError(f"{adapter} is missing: run `ltx-lora train` to export the adapter first")
    check_safetensors(adapter)
    if not header_metadata(adapter).get("base_model"):
        raise UserError(
            f"{adapter} has no metadata header naming its base_model: a consumer could not tell "
            "what it applies to; re-export it with `ltx-lora train`"
        )
    record = _load_model(train_dir / TRAIN_RECORD, TrainRecord, "run `ltx-lora train` first")
    extra = {TRAIN_RECORD: train_dir / TRAIN_RECORD}
    if (train_dir / TRAIN_CONFIG).is_file():
        extra[TRAIN_CONFIG] = train_dir / TRAIN_CONFIG
    files = {rel: p for rel, p in _files_under(adapter_dir).items() if rel != MANIFEST_NAME}
    return TrainRun(train_dir, record, files, _load_steps(train_dir / TRAIN_METRICS), extra)


def load_eval(eval_dir: Path | None) -> EvalRun:
    """Validate `eval_dir` (metrics.json, report.html, samples/); None or absent ⇒ unscored."""
    if eval_dir is None or not Path(eval_dir).exists():
        return EvalRun(EvalRecord(verdict="unscored"))
    eval_dir = Path(eval_dir)
    record = _load_model(eval_dir / EVAL_METRICS, EvalRecord, "run `ltx-lora evaluate` first")
    files = {
        f"eval/{rel}": p
        for rel, p in _files_under(eval_dir).items()
        if rel.split("/", 1)[0] in EVAL_FILES
    }
    return EvalRun(record, files)


def file_manifest(
    files: dict[str, Path], recorded: dict[str, str] | None = None, record: Path | None = None
) -> dict[str, dict[str, Any]]:
    """`{relative path: {"sha256", "bytes"}}`: what a pull verifies the downloaded files against.
    A digest training `recorded` in `record` is reused while the file is unchanged since
    (see registry.digest.reusable_digest); the other files are hashed, in parallel threads."""
    digests: dict[str, str] = {}
    if recorded and record is not None:
        for rel, path in files.items():
            reused = reusable_digest(path, recorded.get(rel), record)
            if reused is not None:
                digests[rel] = reused
    todo = [rel for rel in files if rel not in digests]
    digests |= dict(zip(todo, hash_files([files[rel] for rel in todo]), strict=True))
    return {rel: {"sha256": digests[rel], "bytes": p.stat().st_size} for rel, p in files.items()}


def check_safetensors(path: Path) -> None:
    """Raise a UserError unless `path` starts with a safetensors header (u64 length + JSON)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
        ok = 0 < n <= min(_MAX_HEADER, size - 8)
        try:
            ok = ok and isinstance(json.loads(f.read(n)), dict)
        except (UnicodeDecodeError, json.JSONDecodeError):
            ok = False
    if not ok:
        raise UserError(f"{path} is not a safetensors file: re-export the adapter (ltx-lora train)")


def header_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors header ({} when absent); call check_safetensors first."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n)).get("__metadata__")
    return meta if isinstance(meta, dict) else {}


def _files_under(root: Path) -> dict[str, Path]:
    """Every file under `root` by posix relative path; hidden names (temp files) are skipped."""
    files = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            files[rel.as_posix()] = p
    return files


def _load_model(path: Path, model: type[M], hint: str) -> M:
    if not path.is_file():
        raise UserError(f"{path} is missing: {hint}")
    try:
        return model.model_validate_json(path.read_bytes())
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        raise UserError(f"{path}: {where}: {err['msg']}") from e


def _load_steps(path: Path) -> list[StepMetrics]:
    """One `StepMetrics` per row of metrics.jsonl (absent ⇒ none); non-numeric fields ignored."""
    if not path.is_file():
        return []
    steps = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            steps.append(_step_row(path, i, line))
    return steps


def _step_row(path: Path, lineno: int, line: str) -> StepMetrics:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} line {lineno} is not JSON ({e.msg})") from e
    step = row.get("step") if isinstance(row, dict) else None
    if not isinstance(step, int) or isinstance(step, bool):
        raise UserError(f"{path} line {lineno}: needs an integer 'step'")
    values = {
        k: float(v)
        for k, v in row.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }
    return StepMetrics(step, values)
