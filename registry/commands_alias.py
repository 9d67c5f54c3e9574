"""`ltx-lora registry promote | rollback | history`: moving `champion` and the record of moves."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from registry.names import KEY_SCORE

if TYPE_CHECKING:
    from mlflow import MlflowClient


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


def _actor_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--reason", help="why: recorded with the move")
    sub.add_argument("--actor", help="who, for the record (default: the OS user)")


def _promote(args: argparse.Namespace) -> int:
    from registry.promote import promote

    event = promote(
        _open(args),
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

    event = rollback(_open(args), args.name, reason=args.reason, actor=args.actor)
    return _print_event(args, event)


def _history(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from registry.promote import alias_history

    events = alias_history(_open(args), args.name, args.alias)
    if args.json:
        return _print_json([asdict(e) for e in events])
    if not events:
        print(f"{args.name}: no alias moves recorded")
    for e in events:
        print(_event_line(e))
    return 0


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


def _open(args: argparse.Namespace) -> MlflowClient:
    from registry.commands import open_registry  # imported late: commands imports this module

    return open_registry(args)


def _print_json(obj: Any) -> int:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return 0


ARGS = {"promote": _args_promote, "rollback": _args_rollback, "history": _args_history}
HANDLERS = {"promote": _promote, "rollback": _rollback, "history": _history}
