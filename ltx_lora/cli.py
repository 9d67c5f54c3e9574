"""`ltx-lora`: one verb per pipeline stage, each taking Hydra overrides (key=value)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stagekit.privacy import apply_offline_defaults

if TYPE_CHECKING:
    from ltx_lora.config import PipelineConfig
    from stagekit.workspace import Workspace

VERBS = {
    "curate": "probe raw clips, conform them to the model's buckets; manifest + quarantine",
    "caption": "attach captions (sidecar .txt or the card's template) with the trigger word",
    "preprocess": "encode video/audio latents and text embeddings into the cache",
    "plan": "predict a training step's peak GPU memory and host RAM, before loading anything",
    "train": "train a LoRA on the cached latents; export diffusers + ComfyUI adapters",
    "evaluate": "render base vs adapter, score against reference clips; verdict + report",
    "register": "register the adapter in MLflow as <client>.<adapter> with lineage tags",
    "run": "all of the above, in order (each stage skips work it has already done)",
    "sample": "generate the procedural sample dataset (done on first use anyway)",
    "dataset": "dataset status: the DVC hash of raw/ (the lineage key) and its tracking state",
}

PARAMS_HELP = "write params.yaml: the composed config that `dvc repro` / `dvc exp run` stages run"

EPILOG = """\
examples:
  ltx-lora run                                  the sample dataset on the demo base
  ltx-lora run dataset=acme-mascot              your clips in datasets/acme-mascot/raw/
  ltx-lora train lora.rank=16 trainer.max_steps=50
  ltx-lora run experiment=quick                 an override-only file in configs/experiment/
  ltx-lora train --cfg                          print the composed config and exit
  ltx-lora plan model=ltx2 --gpu 24GB --clip 121x512x768   what fits a 24 GB card
  ltx-lora train -m lora.rank=8,16 trainer.lr=1e-4,2e-4   a Hydra sweep (docs/scaling.md)
  ltx-lora train trainer.strategy=keyframes      a mode (docs/training.md, "Modes")
  ltx-lora params && dvc repro                  the pipeline under DVC (dvc exp run -S k=v)

The workspace is --workspace, else $LTX_LORA_WORKSPACE, else the current directory.
Nothing leaves the machine: telemetry is off and model hubs are offline.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltx-lora",
        description="LoRA fine-tuning and adapter management for LTX-2.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workspace", type=Path, help="folder holding datasets/ (default: cwd)")
    verbs = parser.add_subparsers(
        dest="verb", required=True, metavar="VERB", title="verbs (pipeline order)"
    )
    for verb, help_text in VERBS.items():
        sub = verbs.add_parser(verb, help=help_text, description=help_text)
        sub.add_argument(
            "overrides",
            nargs="*",
            metavar="key=value",
            help="Hydra overrides, e.g. dataset=acme-mascot trainer.max_steps=50",
        )
        sub.add_argument("--cfg", action="store_true", help="print the composed config and exit")
        if verb not in ("sample", "dataset"):
            sub.add_argument(
                "--params",
                type=Path,
                metavar="YAML",
                help="run this composed config (dvc.yaml passes params.yaml) instead of configs/",
            )
        if verb == "train":
            sub.add_argument(
                "-m",
                "--multirun",
                action="store_true",
                help="Hydra sweep: one member per combination (a,b lists); hydra/launcher=... "
                "picks where they run",
            )
        if verb == "dataset":
            sub.add_argument("action", choices=["status"], help="what to show")
        if verb == "plan":
            sub.add_argument(
                "--gpu", metavar="SIZE", help="the card's memory, e.g. 24GB (default: detected)"
            )
            sub.add_argument(
                "--ram",
                metavar="SIZE",
                help="the host's memory, e.g. 64GB: list only settings that fit it too",
            )
            sub.add_argument(
                "--clip",
                metavar="FxHxW",
                help="plan this clip, e.g. 121x512x768 (default: the largest configured bucket)",
            )
            sub.add_argument(
                "--attention",
                choices=["fused", "math"],
                default="fused",
                help="fused: the SDPA kernels GPUs run (default); math: one that keeps scores",
            )
        if verb == "caption":
            sheet = sub.add_mutually_exclusive_group()
            sheet.add_argument(
                "--export-sheet",
                type=Path,
                metavar="CSV",
                help="write captions to a CSV for review, then stop",
            )
            sheet.add_argument(
                "--import-sheet",
                type=Path,
                metavar="CSV",
                help="keep the edited captions of a reviewed CSV, then caption",
            )
    params = verbs.add_parser("params", help=PARAMS_HELP, description=PARAMS_HELP)
    params.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra overrides")
    from registry.commands import add_parsers

    add_parsers(verbs)  # `registry …` and `pull`: plain flags, no Hydra config
    from ltx_lora.generate import add_parser as add_generate

    add_generate(verbs)  # `generate --adapter … --prompt …`: flags + model/render overrides
    return parser


def main(argv: list[str] | None = None) -> int:
    apply_offline_defaults()  # before any library that could phone home is imported
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # stages show their own bars
    args = build_parser().parse_args(argv)
    if hasattr(args, "registry_handler"):
        from registry.commands import run as run_registry

        return run_registry(args)
    if hasattr(args, "generate_handler"):
        return args.generate_handler(args)

    from stagekit.errors import UserError
    from stagekit.workspace import Workspace

    ws = Workspace(args.workspace.resolve()) if args.workspace else Workspace.from_env()
    try:
        if args.verb == "params" or getattr(args, "multirun", False):
            return _compose_only(args, ws)
        cfg = _config(args, ws)
        if args.cfg:
            import yaml

            print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")
            return 0
        from ltx_lora import plans, stages

        plans.configure_runtime(cfg)
        if getattr(args, "export_sheet", None):
            stages.export_sheet(ws, cfg, args.export_sheet)
        elif getattr(args, "import_sheet", None):
            stages.import_sheet(ws, cfg, args.import_sheet)
        elif args.verb == "plan":
            plans.plan(ws, cfg, args.gpu, args.clip, args.attention, args.ram)
        else:
            stages.STAGES[args.verb](ws, cfg)
    except UserError as e:
        print(f"ltx-lora {args.verb}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"ltx-lora {args.verb}: interrupted; re-run to continue", file=sys.stderr)
        return 130
    return 0


def _config(args: argparse.Namespace, ws: Workspace) -> PipelineConfig:
    """The stage's config: the composed file under DVC (`--params`), else Hydra composition."""
    from ltx_lora.config import load_config, load_params
    from stagekit.errors import ConfigError

    if getattr(args, "params", None) is None:
        return load_config(args.verb, args.overrides, ws.root)
    if args.overrides:
        raise ConfigError(
            "--params runs the file as it is: change it with `dvc exp run -S key=value` "
            "or `ltx-lora params key=value`, not with overrides here"
        )
    return load_params(args.params)


def _compose_only(args: argparse.Namespace, ws: Workspace) -> int:
    """`params` writes the composed tree; `train -m` hands the overrides to a Hydra sweep."""
    if args.verb == "params":
        from ltx_lora.config import compose_params, config_dir
        from stagekit.files import write_text

        dest = ws.root / "params.yaml"
        write_text(dest, compose_params(args.overrides, config_dir(ws.root)))
        print(f"wrote {dest}: `dvc repro` runs it; `dvc exp run -S key=value` rewrites it")
        return 0
    from ltx_lora.sweep import sweep
    from stagekit.errors import ConfigError

    if args.params is not None:
        raise ConfigError("-m composes configs/ for each member: it does not take --params")
    if args.cfg:
        return _print_sweep(args, ws)
    sweep(ws, args.verb, args.overrides)
    return 0


def _print_sweep(args: argparse.Namespace, ws: Workspace) -> int:
    """`-m ... --cfg`: each member's overrides, each composed and validated, and the first
    member's config; nothing runs."""
    import yaml

    from ltx_lora.config import load_config
    from ltx_lora.sweep import members

    planned = members(args.overrides)
    configs = [load_config(args.verb, m, ws.root) for m in planned]
    print(f"# a sweep of {len(planned)} members; the first member's config follows")
    for n, m in enumerate(planned):
        print(f"# {n}: {' '.join(m)}")
    print(yaml.safe_dump(configs[0].model_dump(), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
