"""`ltx-lora registry …` and `ltx-lora pull`: plain argparse verbs (no Hydra), torch-free.

The registry is the workspace's sqlite (`<workspace>/.mlflow/mlflow.db`) unless `--tracking-uri`
or `--registry server` ($MLFLOW_TRACKING_URI, else http://127.0.0.1:5000) says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry import agency, commands_alias, commands_read
from stagekit.errors import UserError

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_SERVER = "http://127.0.0.1:5000"
REGISTRY_VERBS = {
    "list": "registered adapters (of one client with --client), their versions and aliases",
    "show": "one version: lineage, verdict and scores, aliases, files",
    "compare": "two versions side by side: which lineage fields and scores differ",
    "lineage": "which data, code and base model made a version",
    "promote": "move 'champion' to a version that passed and scores at least as well",
    "rollback": "move 'champion' back to the version it replaced",
    "history": "every recorded alias move: who, when, from, to, why",
    "serve": "run the team registry server (PostgreSQL, basic-auth, a workspace per client)",
    "add-client": "(admin) give a client its workspace and a user that sees only it",
}
EPILOG = (
    """\
examples:
  ltx-lora registry list --client acme
  ltx-lora registry show acme.mascot@champion
  ltx-lora registry compare acme.mascot@3 acme.mascot@champion
  ltx-lora registry promote acme.mascot 3
  ltx-lora registry promote acme.mascot 4 --force --reason "client sign-off, ticket 812"
  ltx-lora registry rollback acme.mascot --reason "flicker in delivery renders"
  ltx-lora pull acme.mascot@champion --for comfyui --to ComfyUI/models/loras
  ltx-lora pull acme.mascot@champion --for ltx-pipelines --to loras/
  ltx-lora pull acme.mascot@champion --for diffusers --to adapters/mascot/
"""
    + agency.EXAMPLES
)


def add_parsers(verbs: Any) -> None:
    """Add `registry` (with its sub-verbs) and `pull` to the CLI's sub-parsers."""
    reg = verbs.add_parser(
        "registry",
        help="read, promote and serve the adapter registry (MLflow)",
        description="Read, promote and serve the adapter registry (MLflow).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subs = reg.add_subparsers(dest="registry_verb", required=True, metavar="ACTION")
    for verb, help_text in REGISTRY_VERBS.items():
        sub = subs.add_parser(verb, help=help_text, description=help_text)
        if verb not in ("serve",):
            _backend_flags(sub)
        _VERB_ARGS[verb](sub)
        sub.set_defaults(registry_handler=_HANDLERS[verb])
    agency.add_verbs(subs, _backend_flags)  # licence, sync
    pull = verbs.add_parser(
        "pull",
        help="download an adapter by alias or version, verified against its sha256 manifest",
        description="Download name@alias|version into DIR; every byte checked before it lands.",
    )
    _backend_flags(pull)
    pull.add_argument("ref", metavar="NAME@ALIAS|VERSION", help="e.g. acme.mascot@champion")
    pull.add_argument(
        "--for",
        "--format",  # its old name
        dest="consumer",
        required=True,
        choices=["comfyui", "ltx-pipelines", "diffusers"],
        help="the consumer: each gets its own file (docs/exports.md)",
    )
    pull.add_argument("--to", required=True, type=Path, metavar="DIR")
    pull.add_argument("--ema", action="store_true", help="the EMA weights, if trained with EMA")
    agency.add_base_flags(pull)
    pull.set_defaults(registry_handler=_pull)


def run(args: argparse.Namespace) -> int:
    """Run a parsed registry verb; a UserError is printed as one line (exit 1)."""
    from registry.errors import one_line_errors

    verb = "pull" if args.verb == "pull" else f"registry {args.registry_verb}"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one-line output
    target = _target(args)
    try:
        uri = tracking_uri(args) if hasattr(args, "tracking_uri") else None
        with one_line_errors(f"{verb} {target or ''}".strip(), uri, _client_of(target)):
            return int(args.registry_handler(args) or 0)
    except UserError as e:
        print(f"ltx-lora {verb}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"ltx-lora {verb}: interrupted", file=sys.stderr)
        return 130


def _target(args: argparse.Namespace) -> str | None:
    """What the verb acts on (a model, a ref, a client), for error messages."""
    for key in ("ref", "name", "a", "client"):
        if value := getattr(args, key, None):
            return str(value) + (f" {args.version}" if key == "name" and "version" in args else "")
    return None


def _client_of(target: str | None) -> str | None:
    """The client slug a target names (`acme.mascot@champion` -> acme, `acme` -> acme)."""
    return target.split(".", 1)[0].split("@", 1)[0].split(" ", 1)[0] if target else None


def tracking_uri(args: argparse.Namespace) -> str:
    """`--tracking-uri`, else the server of `--registry server`, else the workspace's sqlite."""
    from registry.store import local_tracking_uri

    if args.tracking_uri:
        return args.tracking_uri
    if args.registry == "server":
        return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_SERVER
    return local_tracking_uri(_workspace(args).mlflow_dir)


def open_registry(args: argparse.Namespace) -> MlflowClient:
    """A client on the chosen registry; a local one must exist already (nothing is created)."""
    from registry.store import open_client, sqlite_path

    uri = tracking_uri(args)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise UserError(
            f"no registry at {db}: run `ltx-lora register` (or `ltx-lora run`) in this "
            "workspace first, or pass --tracking-uri / --registry server"
        )
    return open_client(uri, experiment=None)


# --- arguments -----------------------------------------------------------------------------


def _backend_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--tracking-uri", help="an MLflow tracking URI (default: the workspace's sqlite)"
    )
    sub.add_argument(
        "--registry",
        choices=["local", "server"],
        default="local",
        help="server: $MLFLOW_TRACKING_URI, else " + DEFAULT_SERVER,
    )
    sub.add_argument("--json", action="store_true", help="print JSON instead of text")


def _args_serve(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--db",
        default=os.environ.get("LTX_LORA_REGISTRY_DB", "postgresql://postgres@127.0.0.1/ltx_lora"),
        help="PostgreSQL URI (created if missing); default $LTX_LORA_REGISTRY_DB",
    )
    sub.add_argument("--artifacts", type=Path, help="default: <workspace>/.mlflow/server/artifacts")
    sub.add_argument("--host", default="127.0.0.1")
    sub.add_argument("--port", type=int, default=5000)
    sub.add_argument("--workers", type=int, default=2)
    sub.add_argument("--admin", default="admin", help="admin user (password from env)")


def _args_add_client(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("client", metavar="CLIENT")
    sub.add_argument("--user", required=True, help="the user to create or reuse")
    sub.add_argument(
        "--password-env",
        default="LTX_LORA_CLIENT_PASSWORD",
        help="environment variable holding the new user's password",
    )


# --- handlers ------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from registry.server import ServerSpec, serve

    state = _workspace(args).mlflow_dir / "server"
    spec = ServerSpec(
        db_uri=args.db,
        artifacts=args.artifacts or state / "artifacts",
        state_dir=state,
        host=args.host,
        port=args.port,
        workers=args.workers,
        admin=args.admin,
    )
    return serve(spec)


def _add_client(args: argparse.Namespace) -> int:
    from registry.server import add_client, check_password

    password = os.environ.get(args.password_env)
    if not password:
        raise UserError(f"set {args.password_env} to the new user's password")
    check_password(password, args.password_env)  # before anything is created
    uri = tracking_uri(args)
    open_registry(args)  # fails fast, with a clear message, when the server is down
    add_client(uri, args.client, args.user, password)
    print(f"client {args.client}: workspace ready; {args.user} manages it and sees nothing else")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from registry.pull import pull
    from registry.read import parse_ref

    name, ref = parse_ref(args.ref)
    base = {"base": args.base, "allow_cross_version": args.allow_cross_version}
    got = pull(open_registry(args), name, ref, args.consumer, args.to, ema=args.ema, **base)
    if args.json:
        return _print_json({k: str(v) for k, v in got.__dict__.items()})
    print(f"pulled {got.name} version {got.version} ({got.format}) → {got.path}")
    print(f"  sha256 {got.sha256} verified, {got.bytes} bytes; record {got.record}")
    if got.warning:
        print(f"warning: {got.warning}", file=sys.stderr)
    return 0


# --- helpers -------------------------------------------------------------------------------


def _workspace(args: argparse.Namespace) -> Any:
    from stagekit.workspace import Workspace

    root = getattr(args, "workspace", None)
    return Workspace(Path(root).resolve()) if root else Workspace.from_env()


def _print_json(obj: Any) -> int:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return 0


_VERB_ARGS = {
    **commands_read.ARGS,
    **commands_alias.ARGS,
    "serve": _args_serve,
    "add-client": _args_add_client,
}
_HANDLERS = {
    **commands_read.HANDLERS,
    **commands_alias.HANDLERS,
    "serve": _serve,
    "add-client": _add_client,
}
