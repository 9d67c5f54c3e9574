"""The CLI's verbs: the only place that knows every stage and wires their files together."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ltx_lora.config import PipelineConfig
from ltx_lora.plans import PLAN_CACHE, check_preprocess_fits, model_path, plan
from stagekit.errors import UserError
from stagekit.files import write_json
from stagekit.lineage import git_commit
from stagekit.workspace import Workspace

CODE_ROOT = Path(__file__).resolve().parents[1]


def ensure_dataset(ws: Workspace, name: str) -> None:
    """Generate the sample dataset on first use; any other dataset must already exist."""
    if name == "sample" and not ws.card(name).is_file():
        from curation.sample import generate_sample_dataset

        print(f"generating the sample dataset in {ws.dataset(name)} ...")
        generate_sample_dataset(ws.dataset(name))
    ws.require_dataset(name)


def sample(ws: Workspace, cfg: PipelineConfig) -> dict[str, Any]:
    """Create the sample dataset now (other verbs do it on first use)."""
    ensure_dataset(ws, "sample")
    print(f"sample dataset ready in {ws.dataset('sample')}")
    return {"path": str(ws.dataset("sample"))}


def curate(ws: Workspace, cfg: PipelineConfig) -> dict[str, Any]:
    from curation.card import load_card
    from curation.curate import curate as run_curate
    from curation.curate import format_summary, list_inputs
    from ltx.buckets import bucket_rules

    ensure_dataset(ws, cfg.dataset)
    card = load_card(ws.card(cfg.dataset))
    list_inputs(ws.raw(cfg.dataset))  # an empty folder fails now, before the model loads
    rules = bucket_rules(model_path(ws, cfg))
    summary = run_curate(ws.raw(cfg.dataset), ws.curated(cfg.dataset), card, cfg.curation, rules)
    print(format_summary(summary))
    print(f"report  {ws.curated(cfg.dataset) / 'report.html'}")
    return summary


def caption(ws: Workspace, cfg: PipelineConfig) -> dict[str, Any]:
    from curation.caption import caption as run_caption
    from curation.card import load_card

    card = load_card(ws.card(cfg.dataset))
    _require(ws.curated(cfg.dataset) / "manifest.jsonl", "curate")
    summary = run_caption(
        ws.curated(cfg.dataset),
        ws.raw(cfg.dataset),
        ws.captioned(cfg.dataset),
        card,
        cfg.curation.caption,
    )
    _say(
        "caption",
        summary,
        f"{summary['captioned']} clips captioned "
        f"({summary['from_sidecar']} from sidecars, {summary['from_template']} from the template)",
    )
    if checks := summary.get("checks"):
        listed = ", ".join(f"{n} {name}" for name, n in sorted(checks.items()))
        print(f"caption checks failed: {listed} (see {ws.captioned(cfg.dataset) / 'checks.jsonl'})")
    return summary


def export_sheet(ws: Workspace, cfg: PipelineConfig, dest: Path) -> None:
    """Captions to a CSV a person edits in a spreadsheet."""
    from curation.review import export_review_sheet

    _require(ws.captioned(cfg.dataset) / "manifest.jsonl", "caption")
    n = export_review_sheet(ws.captioned(cfg.dataset), dest)
    print(
        f"wrote {n} captions to {dest}; edit the caption column, then "
        f"ltx-lora caption --import-sheet {dest}"
    )


def import_sheet(ws: Workspace, cfg: PipelineConfig, sheet: Path) -> dict[str, Any]:
    """Keep a person's caption edits, then caption again with them."""
    from curation.review import import_review_sheet

    _require(ws.captioned(cfg.dataset) / "manifest.jsonl", "caption")
    result = import_review_sheet(sheet, ws.captioned(cfg.dataset), ws.raw(cfg.dataset))
    print(f"{result['edited']} captions changed ({result['kept']} reviewed in all)")
    return caption(ws, cfg)


def dataset(ws: Workspace, cfg: PipelineConfig) -> dict[str, Any]:
    """`ltx-lora dataset status`: the DVC hash of raw/ and whether DVC tracks it as it is."""
    from curation.status import dataset_status, format_status

    ensure_dataset(ws, cfg.dataset)
    status = dataset_status(ws.dataset(cfg.dataset))
    print(format_status(status))
    return status


def preprocess(ws: Workspace, cfg: PipelineConfig) -> dict[str, Any]:
    from trainer.cache import build_cache

    manifest = _require(ws.captioned(cfg.dataset) / "manifest.jsonl", "caption")
    mpath = model_path(ws, cfg)
    check_preprocess_fits(cfg, mpath, manifest)
    summary = build_cache(
        manifest, ws.curated(cfg.dataset), ws.cache(cfg.dataset), mpath, cfg.model, cfg.preprocess
    )
    if os.environ.get("RANK", "0") != "0":  # under torchrun the first process reports
        return summary
    _say(
        "preprocess",
        summary,
        f"{summary['entries']} clips cached "
        f"({summary['encoded']} encoded, {summary['reused']} up to date)",
    )
    return summary


def train(ws: Workspace, cfg: PipelineConfig, out: Path | None = None) -> dict[str, Any]:
    """`out`: a sweep member's own folder (checkpoints beside it), else outputs/<ds>/train."""
    from curation.card import load_card
    from trainer.train import train as run_train

    _require(ws.cache(cfg.dataset) / "index.json", "preprocess")
    if "mlflow" in cfg.trainer.trackers:  # the trainer logs through Accelerate to this store
        from registry.store import ensure_schema, local_tracking_uri

        uri = local_tracking_uri(ws.mlflow_dir)
        ensure_schema(uri)  # created once, under a lock, before any process logs to it
        os.environ["MLFLOW_TRACKING_URI"] = uri
    card = load_card(ws.card(cfg.dataset))
    mpath = model_path(ws, cfg)
    lineage = _lineage(ws, cfg, mpath)
    out = out or ws.train(cfg.dataset)
    summary = run_train(
        ws.cache(cfg.dataset),
        out,
        mpath,
        cfg.model,
        cfg.lora,
        cfg.trainer,
        seed=cfg.seed,
        trigger=card.trigger,
        lineage=lineage,
        resolved_config=cfg.model_dump(),
        plan_cache=ws.root / PLAN_CACHE,
    )
    if os.environ.get("RANK", "0") != "0":  # under torchrun the first process reports
        return summary
    _say(
        "train",
        summary,
        f"{summary['steps']} steps, final loss {summary['final_loss']:.4f}, "
        f"adapter in {out / 'adapter'}",
    )
    return summary


def evaluate(ws: Workspace, cfg: PipelineConfig) -> dict[str, Any]:
    from curation.card import load_card
    from evaluation.evaluate import evaluate as run_evaluate

    adapter = _require(ws.train(cfg.dataset) / "adapter" / "adapter.safetensors", "train")
    card = load_card(ws.card(cfg.dataset))
    summary = run_evaluate(
        adapter,
        ws.reference(cfg.dataset),
        ws.evaluation(cfg.dataset),
        model_path(ws, cfg),
        cfg.model,
        cfg.evaluation,
        card=card.model_dump(),
        curated_dir=ws.curated(cfg.dataset),  # held-out clips join the references; train → copies
        suite_file=ws.dataset(cfg.dataset) / "evaluation.yaml",
        cache_dir=ws.outputs(cfg.dataset) / "eval-cache",
        champion=_champion(ws, cfg, f"{card.client}.{card.adapter}"),
    )
    write_json(
        ws.outputs(cfg.dataset) / "metrics.json",
        {"verdict": summary["verdict"], **summary["scores"], **_train_losses(ws, cfg)},
    )
    _say("evaluate", summary, f"verdict {summary['verdict']}; report {summary['report']}")
    return summary


def _champion(ws: Workspace, cfg: PipelineConfig, name: str) -> Path | None:
    """The registry's current champion of `name`, pulled (verified) into the eval cache, so
    evaluate renders it beside base and adapter; None when there is none to compare with."""
    from registry.pull import pull
    from registry.store import local_tracking_uri, open_client, sqlite_path

    uri = cfg.registry.tracking_uri or local_tracking_uri(ws.mlflow_dir)
    if (db := sqlite_path(uri)) is not None and not db.is_file():
        return None  # nothing registered in this workspace yet
    dest = ws.outputs(cfg.dataset) / "eval-cache" / "champion"
    try:
        return pull(open_client(uri, experiment=None), name, "champion", "diffusers", dest).path
    except Exception as e:  # no champion yet, or the registry is unreachable: compare without
        print(f"evaluate: no champion to compare with ({str(e).splitlines()[0][:120]})")
        return None


def register(ws: Workspace, cfg: PipelineConfig) -> dict[str, Any]:
    from curation.card import load_card
    from registry.describe import describe_version, format_registration
    from registry.register import register_adapter
    from registry.store import local_tracking_uri, open_client

    _require(ws.train(cfg.dataset) / "train.json", "train")
    card = load_card(ws.card(cfg.dataset))
    uri = cfg.registry.tracking_uri or local_tracking_uri(ws.mlflow_dir)
    artifacts = ws.mlflow_dir / "artifacts" if uri.startswith("sqlite") else None
    client = open_client(uri, artifacts, experiment=cfg.registry.experiment)
    eval_dir = ws.evaluation(cfg.dataset)
    reg = register_adapter(
        client,
        name=f"{card.client}.{card.adapter}",
        train_dir=ws.train(cfg.dataset),
        eval_dir=eval_dir if (eval_dir / "metrics.json").is_file() else None,
        experiment=cfg.registry.experiment,
        alias=cfg.registry.alias,
        dataset_card=card.registry_record(),  # with the rights details model_dump leaves out
    )
    info = describe_version(client, reg.name, str(reg.version))
    print(format_registration(reg, info))
    summary = {
        "name": reg.name,
        "version": reg.version,
        "alias": reg.alias,
        "run_id": reg.run_id,
        "created": reg.created,
        "tracking_uri": uri,
    }
    write_json(ws.registration(cfg.dataset) / "registration.json", summary)
    return summary


def run(ws: Workspace, cfg: PipelineConfig) -> dict[str, Any]:
    """Every stage in order; ends with what was made and where to look."""
    results = {name: STAGES[name](ws, cfg) for name in PIPELINE}
    reg, ev = results["register"], results["evaluate"]
    headline = ("fidelity_base", "fidelity_adapter", "fidelity_lift", "fidelity_lift_ci_low")
    scores = ", ".join(f"{k} {ev['scores'][k]:.4f}" for k in headline if k in ev["scores"])
    scores += "".join(f"\n            · {why}" for why in ev.get("reasons", []))
    print(
        "\n"
        + "\n".join(
            [
                f"registered  {reg['name']} version {reg['version']} (alias '{reg['alias']}')"
                + ("" if reg["created"] else " — already registered, nothing new"),
                f"verdict     {ev['verdict']}: {scores}",
                f"report      {ev['report']}",
                f"MLflow UI   mlflow ui --backend-store-uri {reg['tracking_uri']}",
            ]
        )
    )
    return results


def _lineage(ws: Workspace, cfg: PipelineConfig, mpath: Path) -> dict[str, str]:
    from curation.identity import dataset_hash
    from curation.status import dataset_status
    from ltx.identity import model_hash

    return {
        "dataset": cfg.dataset,
        "dataset_hash": dataset_hash(ws.captioned(cfg.dataset), ws.curated(cfg.dataset)),
        "base_model": cfg.model.name,
        "base_model_hash": model_hash(mpath),
        "ltx_version": cfg.model.ltx_version,
        "config_hash": cfg.section_hash("model", "lora", "trainer", "preprocess", "curation"),
        "git_commit": git_commit(CODE_ROOT),
        "raw_dvc_hash": dataset_status(ws.dataset(cfg.dataset))["dvc_hash"],
    }


def _train_losses(ws: Workspace, cfg: PipelineConfig) -> dict[str, float]:
    """The adapter's final losses, so `dvc exp show` puts them beside the scores."""
    from stagekit.files import read_json

    record = ws.train(cfg.dataset) / "train.json"
    final = read_json(record).get("final", {}) if record.is_file() else {}
    return {f"train_{k}": final[k] for k in ("loss", "val_loss") if k in final}


def _require(path: Path, stage: str) -> Path:
    if not path.exists():
        raise UserError(f"{path} is missing: run `ltx-lora {stage}` first (or `ltx-lora run`)")
    return path


def _say(stage: str, summary: dict[str, Any], text: str) -> None:
    print(f"{stage}: {'up to date, nothing to do' if summary.get('skipped') else text}")


PIPELINE = ["curate", "caption", "preprocess", "train", "evaluate", "register"]
STAGES: dict[str, Callable[[Workspace, PipelineConfig], dict[str, Any]]] = {
    "curate": curate,
    "caption": caption,
    "preprocess": preprocess,
    "plan": plan,
    "train": train,
    "evaluate": evaluate,
    "register": register,
    "run": run,
    "sample": sample,
    "dataset": dataset,
}
