"""What an evaluation runs on: the prompt suite, seeds, reference clips and training clips."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from evaluation.config import EvaluationConfig, PromptSuite
from stagekit.errors import ConfigError, UserError

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi"}
GROUPS = ("in_distribution", "out_of_distribution", "prior_preservation")


@dataclass(frozen=True)
class Prompt:
    """One rendered prompt: its text (templates filled in) and its purpose."""

    text: str
    group: str  # one of GROUPS


@dataclass(frozen=True)
class Suite:
    prompts: list[Prompt]
    seeds: list[int]
    source: str  # where the prompts came from (config default or the dataset's file)

    def group(self, name: str) -> list[Prompt]:
        return [p for p in self.prompts if p.group == name]


def load_suite(cfg: EvaluationConfig, card: dict[str, Any], suite_file: Path | None) -> Suite:
    """The config's suite, with `prompts` / `seeds` replaced by the dataset's file when present."""
    prompts, seeds, source = cfg.prompts, cfg.seeds, "config"
    if suite_file is not None and suite_file.is_file():
        prompts, seeds = _read_suite_file(suite_file, prompts, seeds)
        source = str(suite_file)
    filled = [
        Prompt(_fill(t, card, suite_file), group)
        for group in GROUPS
        for t in getattr(prompts, group)
    ]
    return Suite(filled, list(seeds), source)


def _read_suite_file(
    path: Path, prompts: PromptSuite, seeds: list[int]
) -> tuple[PromptSuite, list[int]]:
    tree = yaml.safe_load(path.read_text()) or {}
    unknown = set(tree) - {"prompts", "seeds"}
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)} (allowed: prompts, seeds)")
    try:
        if "prompts" in tree:
            prompts = PromptSuite.model_validate(tree["prompts"])
        if "seeds" in tree:
            seeds = [int(s) for s in tree["seeds"]]
    except (ValidationError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {e}".splitlines()[0]) from e
    if not seeds:
        raise ConfigError(f"{path}: seeds must list at least one seed")
    return prompts, seeds


def _fill(template: str, card: dict[str, Any], path: Path | None) -> str:
    try:
        return template.format(**card)
    except (KeyError, IndexError) as e:
        where = path or "evaluation.prompts"
        raise ConfigError(
            f"{where}: prompt {template!r} uses {e} which the dataset card lacks "
            "(use {trigger} and {class_noun})"
        ) from e


def reference_clips(reference_dir: Path, curated_dir: Path | None) -> list[Path]:
    """The dataset's reference clips plus the curated held-out (validation) clips; an IC-LoRA
    control beside a clip (`<clip>_ref.mp4`) conditions renders, it is not a clip of the subject."""
    from evaluation.conditioning import is_control

    clips = sorted(
        p
        for p in reference_dir.glob("*")
        if p.suffix.lower() in VIDEO_SUFFIXES and not is_control(p)
    )
    clips += curated_clips(curated_dir, "validation")
    if not clips:
        raise UserError(
            f"no reference clips: {reference_dir} is empty and no curated clip is held out for "
            "validation. Put a few clips of the subject (never trained on) in that folder"
        )
    return clips


def curated_clips(curated_dir: Path | None, split: str) -> list[Path]:
    """Curated clips of one split, from `manifest.jsonl` (none when there is no manifest)."""
    if curated_dir is None or not (curated_dir / "manifest.jsonl").is_file():
        return []
    text = (curated_dir / "manifest.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [curated_dir / r["path"] for r in rows if r.get("split") == split]
