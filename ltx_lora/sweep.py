"""`ltx-lora train -m lora.rank=8,16 trainer.lr=1e-4,2e-4`: a Hydra multirun sweep.

Hydra's sweeper expands the overrides and its launcher runs the members: `basic` (default: here,
one after another), `submitit_local` (subprocesses) or `submitit_slurm` (a SLURM job array; see
configs/hydra/launcher/). Each member writes only `outputs/<ds>/sweeps/<sweep id>/<n>/` (its
`train/`, `checkpoints/` and Hydra's `.hydra/`), so members never clobber each other nor the
pipeline's `outputs/<ds>/train`. One MLflow parent run groups them; its id reaches every member
in `$LTX_LORA_PARENT_RUN_ID`, and each member becomes a child run (`mlflow.parentRunId`).
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltx_lora.config import compose_tree, config_dir, validate
from registry.store import local_tracking_uri
from stagekit.errors import ConfigError, UserError
from stagekit.files import write_json
from stagekit.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from omegaconf import DictConfig


PARENT_ENV = "LTX_LORA_PARENT_RUN_ID"
SWEEPABLE = ("train",)
PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True)
class Member:
    """The task each launcher runs once per member, possibly on another machine: plain fields
    only, so it pickles (submitit ships it to the job)."""

    root: str
    verb: str
    parent_run_id: str

    def __call__(self, cfg: DictConfig) -> dict[str, Any]:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        from ltx_lora import plans, stages

        hydra = HydraConfig.get()
        os.environ[PARENT_ENV] = self.parent_run_id  # SLURM jobs may not inherit the env
        _export_slurm_distributed()
        tree = OmegaConf.to_container(cfg, resolve=True)
        tree.pop("hydra", None)
        pcfg = validate(tree)
        plans.configure_runtime(pcfg)
        member_dir = Path(hydra.runtime.output_dir)
        summary = stages.train(Workspace(Path(self.root)), pcfg, out=member_dir / "train")
        return {
            "num": hydra.job.num,
            "overrides": list(hydra.overrides.task),
            "dir": str(member_dir),
            "summary": {k: v for k, v in summary.items() if _plain(v)},
        }


def sweep(ws: Workspace, verb: str, overrides: list[str]) -> list[dict[str, Any]]:
    """Run every member of the sweep; returns one record per member, in member order."""
    if verb not in SWEEPABLE:
        raise UserError(f"-m/--multirun sweeps {', '.join(SWEEPABLE)}; `{verb}` runs once")
    check_launcher(overrides)
    configs = config_dir(ws.root)
    base = validate(compose_tree(verb, first_member(overrides), configs))
    sweep_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    sweep_dir = ws.outputs(base.dataset) / "sweeps" / sweep_id
    # the workspace store: where `ltx-lora train` logs training runs (ltx_lora.stages.train)
    uri = local_tracking_uri(ws.mlflow_dir)
    client, experiment, parent = open_parent(ws, uri, sweep_id, overrides)
    os.environ[PARENT_ENV] = parent  # local launchers' subprocesses inherit it
    task = Member(str(ws.root), verb, parent)
    status = "FAILED"
    try:
        members = launch(configs, verb, overrides, sweep_dir, task)
        log_children(client, experiment, parent, sweep_id, members)
        status = "FINISHED"
    finally:
        client.set_terminated(parent, status=status)
    write_json(
        sweep_dir / "sweep.json", {"sweep": sweep_id, "parent_run": parent, "members": members}
    )
    print(format_members(members, sweep_dir, parent))
    return members


def first_member(overrides: list[str]) -> list[str]:
    """The overrides of the sweep's first member (each sweep at its first value, no hydra.*):
    composed and validated before anything launches, so a misspelt key fails once, here."""
    return members(overrides)[0]


def members(overrides: list[str]) -> list[list[str]]:
    """Each member's overrides, in the order Hydra's basic sweeper launches them (the
    cartesian product of the sweeps, the last key varying fastest); hydra.* left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise ConfigError(f"bad sweep override: {str(e).strip().splitlines()[0]}") from e
    choices = []
    for o in parsed:
        if o.is_hydra_override():
            continue
        if not o.is_sweep_override():
            choices.append([o.input_line])
            continue
        values = list(o.sweep_string_iterator())
        if not values:
            raise ConfigError(f"sweep override '{o.input_line}' has no values")
        choices.append([f"{o.get_key_element()}={v}" for v in values])
    return [list(m) for m in itertools.product(*choices)] or [[]]


def check_launcher(overrides: list[str]) -> None:
    """A SLURM launcher off a cluster fails before a parent run is made, saying what to do."""
    import shutil

    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra/launcher=")]
    if any("slurm" in name for name in chosen) and shutil.which("srun") is None:
        raise UserError(
            f"hydra/launcher={chosen[-1]} submits SLURM jobs, but srun is not on this machine's "
            "PATH: run the sweep from a cluster login node, or use hydra/launcher=local here"
        )


def launch(
    configs: Path, verb: str, overrides: list[str], sweep_dir: Path, task: Member
) -> list[dict[str, Any]]:
    """Hydra's own multirun (sweeper + launcher from the config), members in `sweep_dir/<n>`."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    where = [
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${hydra.job.num}",
        "hydra.job.chdir=false",  # members resolve the workspace themselves
    ]
    try:
        with initialize_config_dir(config_dir=str(configs), version_base="1.3", job_name=verb):
            batches = GlobalHydra.instance().hydra.multirun(
                config_name=verb, task_function=task, overrides=[*overrides, *where]
            )
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(str(e).strip().splitlines()[0]) from e
    return sorted((r.return_value for batch in batches for r in batch), key=lambda m: m["num"])


def open_parent(
    ws: Workspace, uri: str, sweep_id: str, overrides: list[str]
) -> tuple[MlflowClient, str, str]:
    """(client, experiment id, parent run id): the parent run in the experiment and store
    training runs log to."""
    from registry.store import open_client
    from trainer.runtime import EXPERIMENT

    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    artifacts = ws.mlflow_dir / "artifacts" if uri.startswith("sqlite") else None
    client = open_client(uri, artifacts, experiment=name)
    experiment = client.get_experiment_by_name(name).experiment_id
    run = client.create_run(
        experiment,
        run_name=f"sweep-{sweep_id}",
        tags={"ltx_lora.sweep": sweep_id, "ltx_lora.overrides": " ".join(overrides)},
    )
    return client, experiment, run.info.run_id


def log_children(
    client: MlflowClient,
    experiment: str,
    parent: str,
    sweep_id: str,
    members: list[dict[str, Any]],
) -> None:
    """One child run per member with its overrides and final numbers, unless training logged
    its own child runs already (it does when it sees $LTX_LORA_PARENT_RUN_ID)."""
    logged = client.search_runs([experiment], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")
    if len(logged) >= len(members):
        return
    for m in members:
        run = client.create_run(
            experiment,
            run_name=f"sweep-{sweep_id}-{m['num']}",
            tags={PARENT_TAG: parent, "ltx_lora.sweep": sweep_id, "ltx_lora.member": m["num"]},
        )
        rid = run.info.run_id
        for override in m["overrides"]:
            key, _, value = override.lstrip("+~").partition("=")
            client.log_param(rid, key, value)
        client.set_tag(rid, "ltx_lora.member_dir", m["dir"])
        for key, value in member_metrics(Path(m["dir"])).items():
            client.log_metric(rid, key, value)
        client.set_terminated(rid)


def member_metrics(member_dir: Path) -> dict[str, float]:
    """Final numbers from the member's train.json (what the trainer wrote, not a re-count)."""
    from stagekit.files import read_json

    record = member_dir / "train" / "train.json"
    if not record.is_file():
        return {}
    final = read_json(record)["final"]
    return {k: float(v) for k, v in final.items() if isinstance(v, int | float)}


def format_members(members: list[dict[str, Any]], sweep_dir: Path, parent: str) -> str:
    rows = [f"sweep of {len(members)} in {sweep_dir}", f"{'#':>3}  {'final loss':>10}  overrides"]
    for m in members:
        loss = m["summary"].get("final_loss")
        shown = f"{loss:10.4f}" if isinstance(loss, float) else f"{'-':>10}"
        rows.append(f"{m['num']:>3}  {shown}  {' '.join(m['overrides'])}")
    rows.append(f"MLflow parent run {parent} (each member a child run)")
    return "\n".join(rows)


def _export_slurm_distributed() -> None:
    """In a multi-task SLURM job (launcher tasks_per_node/nodes > 1) give each task the
    RANK/WORLD_SIZE/MASTER_ADDR that Accelerate reads; a one-task job is left alone."""
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1 or "RANK" in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export()


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None
