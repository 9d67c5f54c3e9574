"""Compose the Hydra config of a stage and validate it into one typed tree, before any work."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from curation.config import CurationConfig
from evaluation.config import EvaluationConfig
from ltx.config import ModelConfig
from registry.config import RegistryConfig
from stagekit.errors import ConfigError
from stagekit.hashing import sha256_json
from trainer.config import LoraConfig, PreprocessConfig, TrainerConfig

PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PipelineConfig(BaseModel):
    """The whole composed tree. Unknown keys are errors, so a typo never runs silently."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    seed: int
    model: ModelConfig
    curation: CurationConfig
    preprocess: PreprocessConfig
    lora: LoraConfig
    trainer: TrainerConfig
    evaluation: EvaluationConfig
    registry: RegistryConfig

    @field_validator("dataset")
    @classmethod
    def _dataset_is_a_folder_name(cls, v: str) -> str:
        if not _SLUG.match(v):
            raise ValueError("must be a folder name under datasets/ (letters, digits, . _ -)")
        return v

    def section_hash(self, *sections: str) -> str:
        """Hash of the named sections plus dataset and seed: what a stage's output depends on."""
        tree = {name: getattr(self, name) for name in ("dataset", "seed", *sections)}
        return sha256_json(
            {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in tree.items()}
        )


def config_dir(workspace_root: Path) -> Path:
    """A workspace's own `configs/` wins over the ones shipped with the code."""
    own = workspace_root / "configs"
    return own if (own / "pipeline.yaml").is_file() else PACKAGED_CONFIGS


def compose_tree(stage: str, overrides: list[str], configs: Path) -> dict[str, Any]:
    """Hydra composition of `configs/<stage>.yaml` with command-line overrides, resolved."""
    try:
        with initialize_config_dir(config_dir=str(configs), version_base="1.3", job_name=stage):
            cfg = compose(config_name=stage, overrides=overrides)
        tree = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_explain(e, stage, configs)) from e
    tree.pop("hydra", None)
    return tree


def _explain(error: Exception, stage: str, configs: Path) -> str:
    """Hydra's message in one line that leads somewhere: a missing group option lists the
    files there are (Hydra's own list comes out empty for a config dir), and a misspelt key
    names the closest real one instead of suggesting `+key` (which would only add the typo)."""
    text = str(error)
    if missing := re.search(r"Could not find '([\w/]+)/([^']+)'", text):
        group, name = missing.groups()
        options = sorted(f.stem for f in (configs / group).glob("*.yaml"))
        return f"{group}={name}: no configs/{group}/{name}.yaml; one of: {', '.join(options)}"
    if bad := re.search(r"Could not override '([^']+)'", text):
        key = bad.group(1)
        return f"unknown config key '{key}'{_closest(key, stage, configs)}: check its spelling " + (
            f"(`ltx-lora {stage} --cfg` prints every key)"
        )
    return _one_line(text)


def _closest(key: str, stage: str, configs: Path) -> str:
    """' (did you mean X?)' for the nearest key of the stage's default tree, else ''."""
    import difflib

    with initialize_config_dir(config_dir=str(configs), version_base="1.3", job_name=stage):
        tree = OmegaConf.to_container(compose(config_name=stage), resolve=False)
    parent, _, leaf = key.rpartition(".")
    siblings = [k.rpartition(".")[2] for k in _flat_keys(tree) if k.rpartition(".")[0] == parent]
    near = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.7)
    return f" (did you mean {'.'.join(filter(None, (parent, near[0])))}?)" if near else ""


def _flat_keys(tree: Any, prefix: str = "") -> Any:
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flat_keys(v, f"{prefix}{k}.")
    elif prefix:
        yield prefix[:-1]


def validate(tree: dict[str, Any]) -> PipelineConfig:
    """The typed tree, or a ConfigError naming the first bad key."""
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(
                f"unknown config key '{key}': check its spelling "
                "(`ltx-lora <stage> --cfg` prints every key)"
            ) from e
        got = "" if err["type"] == "missing" else f" (got {err['input']!r})"
        raise ConfigError(f"config key '{key}': {err['msg']}{got}") from e


def load_config(stage: str, overrides: list[str], workspace_root: Path) -> PipelineConfig:
    """Compose and validate: the single entry point every stage goes through."""
    return validate(compose_tree(stage, overrides, config_dir(workspace_root)))


def compose_params(overrides: list[str], configs: Path) -> str:
    """`params.yaml` text: `configs/pipeline.yaml` composed and resolved exactly as
    `dvc exp run -S` writes it (same Hydra call, same dump), so DVC sees no spurious change."""
    tree = compose_tree("pipeline", overrides, configs)
    validate(tree)  # a bad key fails here, not later inside `dvc repro`
    return OmegaConf.to_yaml(OmegaConf.create(tree))


def load_params(path: Path) -> PipelineConfig:
    """The typed tree from a composed params file (what DVC stages run): no composition."""
    import yaml

    if not path.is_file():
        raise ConfigError(
            f"{path} not found: write it with `ltx-lora params [key=value ...]`, "
            "or run `dvc exp run -S key=value`, which composes configs/ into it"
        )
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {_one_line(str(e))}") from e
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold the composed pipeline config (a mapping)")
    tree.pop("hydra", None)
    return validate(tree)


def _one_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else "invalid configuration"
