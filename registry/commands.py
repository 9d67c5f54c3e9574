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

from registry import agency
from registry.names import CI_SUFFIXES, KEY_SCORE
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
    verb = "pull" if args.verb == "pull" else f"registry {args.registry_verb}"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one-line output
    try:
        return int(args.registry_handler(args) or 0)
    except UserError as e:
        print(f"ltx-lora {verb}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"ltx-lora {verb}: interrupted", file=sys.stderr)
        return 130


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


def _args_list(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--client", help="only this client's adapters")


def _args_ref(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("ref", metavar="NAME@ALIAS|VERSION", help="e.g. acme.mascot@champion")


def _args_compare(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("a", metavar="NAME@REF")
    sub.add_argument("b", metavar="NAME@REF", help="or just @REF: the same name as the first")


def _args_promote(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("version", type=int, metavar="VERSION")
    sub.add_argument("--force", action="store_true", help="skip the gate (needs --reason)")
    _actor_flags(sub)
    sub.add_argument("--key-score", default=KEY_SCORE, help=f"default: {KEY_SCORE}")


def _args_rollback(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", metavar="NAME")
    _actor_flags(sub)


def _args_history(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--alias", help="only this alias's moves")


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


def _actor_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--reason", help="why: recorded with the move")
    sub.add_argument("--actor", help="who, for the record (default: the OS user)")


# --- handlers ------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    from registry.read import list_models

    rows = list_models(open_registry(args), args.client)
    if args.json:
        return _print_json(rows)
    if not rows:
        print("no adapters registered" + (f" for {args.client}" if args.client else ""))
    for r in rows:
        aliases = ", ".join(f"{a}→v{v}" for a, v in r["aliases"].items()) or "no aliases"
        print(f"{r['name']:40} {r['versions']:3d} version(s), latest v{r['latest']}  {aliases}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from registry.read import parse_ref, show

    info = show(open_registry(args), *parse_ref(args.ref))
    if args.json:
        return _print_json(info)
    print(f"{info['name']} version {info['version']}  aliases: {', '.join(info['aliases']) or '-'}")
    print(f"  verdict   {info['verdict']}  (eval suite {info['eval_suite'] or '-'})")
    for k, v in _headline_scores(info["scores"], info["intervals"]).items():
        print(f"  score     {k} = {_score_cell(v, info['intervals'].get(k))}")
    for k, v in info["lineage"].items():
        print(f"  {k:17} {v}")
    print(f"  run       {info['run_id']}")
    for f, e in sorted(info["files"].items()):
        print(f"  file      {f}  {e['bytes']} bytes  sha256 {e['sha256'][:16]}…")
    agency.print_show(info)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from registry.read import compare, parse_ref

    a = parse_ref(args.a)
    b = parse_ref(a[0] + args.b if args.b.startswith("@") else args.b)
    out = compare(open_registry(args), a, b)
    if args.json:
        return _print_json(out)
    print(f"{'':22} {out['a']:>30} {out['b']:>30}")
    rows = {"verdict": out["verdict"], **out["lineage"]}
    cis = out["intervals"]
    for k in _headline_scores(out["scores"], cis):
        (x, y), (cx, cy) = out["scores"][k], cis.get(k, (None, None))
        rows[f"score.{k}"] = (_score_cell(x, cx), _score_cell(y, cy))
    for key, (x, y) in rows.items():
        mark = "≠" if x != y else " "
        print(f"{mark} {key:20} {_cell(x):>30} {_cell(y):>30}")
    if not out["same_suite"]:
        print("note: scored on different eval suites: scores do not compare")
    return 0


def _headline_scores(scores: dict[str, Any], cis: dict[str, Any]) -> dict[str, Any]:
    """The scores less the `_ci_low`/`_ci_high` bounds already shown beside their score."""
    bounds = {k + suffix for k in cis for suffix in CI_SUFFIXES}
    return {k: v for k, v in scores.items() if k not in bounds}


def _score_cell(value: float | None, ci: tuple[float, float] | None) -> str:
    """`0.0512 [0.0123, 0.0901]` (value, then its confidence interval when there is one)."""
    if value is None:
        return "-"
    return f"{value:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")


def _lineage(args: argparse.Namespace) -> int:
    from registry.read import lineage, parse_ref

    out = lineage(open_registry(args), *parse_ref(args.ref))
    if args.json:
        return _print_json(out)
    print(f"{out['name']} version {out['version']}")
    for group in ("data", "code", "base model", "run"):
        for k, v in out[group].items():
            print(f"  {group:11} {k:16} {v}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from registry.promote import promote

    event = promote(
        open_registry(args),
        args.name,
        args.version,
        force=args.force,
        reason=args.reason,
        actor=args.actor,
        key_score=args.key_score,
    )
    if event is None:
        print(f"{args.name} version {args.version} is the champion already: nothing moved")
        return 0
    return _print_event(args, event)


def _rollback(args: argparse.Namespace) -> int:
    from registry.promote import rollback

    event = rollback(open_registry(args), args.name, reason=args.reason, actor=args.actor)
    return _print_event(args, event)


def _history(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from registry.promote import alias_history

    events = alias_history(open_registry(args), args.name, args.alias)
    if args.json:
        return _print_json([asdict(e) for e in events])
    if not events:
        print(f"{args.name}: no alias moves recorded")
    for e in events:
        print(_event_line(e))
    return 0


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
    from registry.server import add_client

    password = os.environ.get(args.password_env)
    if not password:
        raise UserError(f"set {args.password_env} to the new user's password")
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


def _print_event(args: argparse.Namespace, event: Any) -> int:
    from dataclasses import asdict

    if getattr(args, "json", False):
        return _print_json(asdict(event))
    print(_event_line(event))
    return 0


def _event_line(e: Any) -> str:
    before = f"v{e.from_version}" if e.from_version is not None else "(none)"
    return (
        f"{e.when}  {e.action:13} {e.alias}: {before} → v{e.to_version}  by {e.who}"
        + (f" ({e.mlflow_user})" if e.mlflow_user and e.mlflow_user != e.who else "")
        + f"  why: {e.why}"
    )


def _print_json(obj: Any) -> int:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return 0


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = "-" if value is None else str(value)
    return text if len(text) <= 30 else text[:28] + "…"


_VERB_ARGS = {
    "list": _args_list,
    "show": _args_ref,
    "compare": _args_compare,
    "lineage": _args_ref,
    "promote": _args_promote,
    "rollback": _args_rollback,
    "history": _args_history,
    "serve": _args_serve,
    "add-client": _args_add_client,
}
_HANDLERS = {
    "list": _list,
    "show": _show,
    "compare": _compare,
    "lineage": _lineage,
    "promote": _promote,
    "rollback": _rollback,
    "history": _history,
    "serve": _serve,
    "add-client": _add_client,
}
