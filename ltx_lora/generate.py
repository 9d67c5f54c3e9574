"""`ltx-lora generate`: render a prompt with a registered (or local) adapter, through the same
sampling code as `evaluate`."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from stagekit.errors import UserError

LOCAL_SUFFIX = ".safetensors"
HELP = "render a prompt with an adapter: a registered <client>.<adapter>@<alias> or a file"


def add_parser(verbs: Any) -> None:
    """Add `generate` to the CLI's sub-parsers (flags, plus Hydra overrides for model/render)."""
    sub = verbs.add_parser("generate", help=HELP, description=HELP)
    sub.add_argument(
        "--adapter",
        required=True,
        metavar="NAME@ALIAS|FILE",
        help="e.g. acme.mascot@champion, acme.mascot@3, or path/to/adapter.safetensors",
    )
    sub.add_argument("--prompt", required=True, help="the text to render")
    sub.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    sub.add_argument(
        "--out", type=Path, help="mp4 to write (default: generated/<prompt>-seed<N>.mp4)"
    )
    sub.add_argument("--scale", type=float, default=1.0, help="adapter strength (default 1)")
    sub.add_argument(
        "--allow-cross-version",
        action="store_true",
        help="use an adapter on a base model (LTX version) it was not trained or evaluated on",
    )
    sub.add_argument(
        "--tracking-uri", help="MLflow tracking URI of the registry (default: workspace sqlite)"
    )
    sub.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="Hydra overrides for the model and render size, e.g. model=ltx2 evaluation.steps=8",
    )
    sub.set_defaults(generate_handler=main, registry="local")


def main(args: argparse.Namespace) -> int:
    """Resolve the adapter, check it fits the base model, render, write the mp4."""
    from ltx_lora import plans
    from ltx_lora.config import load_config
    from stagekit.workspace import Workspace

    ws = Workspace(args.workspace.resolve()) if args.workspace else Workspace.from_env()
    try:
        cfg = load_config("evaluate", args.overrides, ws.root)
        plans.configure_runtime(cfg)
        adapter = resolve_adapter(args, ws, cfg.model.ltx_version)
        out = args.out or ws.root / "generated" / f"{_slug(args.prompt)}-seed{args.seed}.mp4"
        allow = args.allow_cross_version
        render(
            plans.model_path(ws, cfg), cfg, adapter, args.prompt, args.seed, out, args.scale, allow
        )
    except UserError as e:
        print(f"ltx-lora generate: error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"wrote {out}")
    return 0


def resolve_adapter(args: argparse.Namespace, ws: Any, base: str | None = None) -> Path:
    """A local file as is; a registry reference pulled (verified) into the workspace cache,
    refused when `base` (the LTX version rendered with) is not one the adapter was trained or
    evaluated on, unless --allow-cross-version (registry.compat)."""
    spec = args.adapter
    if spec.endswith(LOCAL_SUFFIX) or Path(spec).is_file():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserError(f"adapter file {path} does not exist")
        return path
    from registry.commands import open_registry
    from registry.pull import pull
    from registry.read import parse_ref

    name, ref = parse_ref(spec)
    dest = ws.root / ".ltx-lora" / "adapters" / name / ref  # the workspace's own state, ignored
    allow = getattr(args, "allow_cross_version", False)
    got = pull(
        open_registry(args), name, ref, "diffusers", dest, base=base, allow_cross_version=allow
    )
    if got.warning:
        print(f"ltx-lora generate: warning: {got.warning}", file=sys.stderr)
    return got.path


def render(
    model_path: Path,
    cfg: Any,
    adapter: Path,
    prompt: str,
    seed: int,
    out: Path,
    scale: float = 1.0,
    allow_cross_version: bool = False,
) -> Path:
    """One clip with the adapter, refused when the adapter was made for another base model
    (unless `allow_cross_version`)."""
    from evaluation.adapters import check_base_model
    from ltx.identity import model_hash
    from ltx.loading import load_pipeline
    from ltx.sampling import generate, write_clip

    if not allow_cross_version:
        check_base_model(adapter, model_hash(model_path))
    pipe = load_pipeline(model_path, cfg.model.dtype, inference=True)
    settings = {**cfg.evaluation.render_settings(), "adapter_scale": scale}
    (clip,) = generate(pipe, [prompt], [seed], adapter=adapter, **settings)
    write_clip(out, clip)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "clip"
