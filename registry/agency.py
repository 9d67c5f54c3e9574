"""The agency verbs of `ltx-lora registry`: `licence` (a version's licence record and
distribution) and `sync` (an inference surface's folder kept in step with an alias), plus the
`--base` / `--allow-cross-version` flags of `pull` and what `show` adds. Torch-free."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from registry.licence import DISTRIBUTIONS

VERBS = {
    "licence": "record a version's licence (base model, data rights) and its distribution flag",
    "archive": "retire a version: kept (files until --keep-days), never promoted or synced",
    "sync": "keep a folder (e.g. ComfyUI/models/loras) holding exactly the entitled champions",
}
EXAMPLES = """\
  ltx-lora registry licence acme.mascot 3 --distribution client --reason "client sign-off"
  ltx-lora registry archive acme.mascot 2 --reason "superseded" --keep-days 365
  ltx-lora registry sync --alias champion --for comfyui --to ComfyUI/models/loras --client acme
  ltx-lora pull acme.mascot@champion --for diffusers --to adapters/ --base 2.5
"""
VERSIONS = ("2.0", "2.3", "2.5")  # ltx.versions.SUPPORTED (the registry imports no ltx)


def add_verbs(subs: Any, backend_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add `licence` and `sync` to `ltx-lora registry`'s sub-parsers."""
    for verb, help_text in VERBS.items():
        sub = subs.add_parser(verb, help=help_text, description=help_text)
        backend_flags(sub)
        _ARGS[verb](sub)
        sub.set_defaults(registry_handler=_HANDLERS[verb])


def add_base_flags(sub: argparse.ArgumentParser) -> None:
    """`--base VERSION` and `--allow-cross-version` (pull, sync)."""
    sub.add_argument(
        "--base",
        choices=VERSIONS,
        help="the LTX version the adapter will be applied to: refused unless trained or "
        "evaluated on it",
    )
    sub.add_argument(
        "--allow-cross-version",
        action="store_true",
        help="use an adapter on a base version it was not trained or evaluated on",
    )


def print_show(info: dict[str, Any]) -> None:
    """`registry show`'s licence and compatibility lines."""
    rec = info["licence"]
    blocked = rec["blocks_client"]
    print(f"  distribution      {rec['distribution'] or 'not recorded'}")
    sha = rec["base_licence_sha256"]
    base = (rec["base_licence"] or "not recorded") + (f" (file sha256 {sha[:16]}…)" if sha else "")
    print(f"  base licence      {base}")
    print(f"  base agreement    {rec['base_agreement'] or '-'}")
    print(f"  data owner        {rec['data_owner'] or '-'}")
    print(f"  data rights       {rec['data_rights'] or '-'}")
    print(f"  data licence      {rec['data_licence'] or 'not stated'}")
    print(f"  consent           {rec['consent'] or 'not stated'}")
    if blocked:
        print(f"  not for clients   {'; '.join(blocked)}")
    suite = info["eval_suite"]
    tested = ", ".join(
        f"{v} ({e.get('verdict')}{'' if e.get('eval_suite') == suite else ', other suite'})"
        for v, e in info["evaluated_on"].items()
    )
    print(f"  evaluated on      {tested or 'none'}")
    print(f"  use on LTX        {', '.join(info['supported_bases']) or '-'}")
    if info.get("archived"):
        print(f"  archived          {info['archived']}")


def _args_licence(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("version", type=int, metavar="VERSION")
    sub.add_argument("--distribution", choices=DISTRIBUTIONS)
    sub.add_argument("--base-licence", metavar="ID", help="e.g. 'LTX-2 Community License'")
    sub.add_argument("--licence-file", type=Path, help="the base model's licence file: its sha256")
    sub.add_argument("--agreement", help="the commercial agreement for the base model, e.g. a ref")
    sub.add_argument("--data-licence", help="the clips' licence (overrides the dataset card's)")
    sub.add_argument("--consent", choices=("obtained", "no-people", "not-obtained"))
    sub.add_argument("--reason", help="why: recorded in the history")
    sub.add_argument("--actor", help="who, for the record (default: the OS user)")


def _args_sync(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--alias", default="champion")
    sub.add_argument(
        "--for", dest="consumer", required=True, choices=["comfyui", "ltx-pipelines", "diffusers"]
    )
    sub.add_argument("--to", required=True, type=Path, metavar="DIR")
    sub.add_argument("--client", help="a client's surface: its models that allow client use")
    add_base_flags(sub)


def _licence(args: argparse.Namespace) -> int:
    from registry.commands import open_registry
    from registry.licence import set_licence

    changes = {
        "distribution": args.distribution,
        "licence.base": args.base_licence,
        "licence.base_agreement": args.agreement,
        "rights.licence": args.data_licence,
        "rights.consent": args.consent,
        "licence_file": str(args.licence_file) if args.licence_file else None,
    }
    record = set_licence(
        open_registry(args), args.name, args.version, changes, reason=args.reason, actor=args.actor
    )
    if args.json:
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0
    print(f"{args.name} version {args.version}: distribution {record['distribution']}")
    for key in ("base_licence", "base_licence_sha256", "base_agreement", "data_licence", "consent"):
        print(f"  {key:20} {record[key] or '-'}")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from registry.commands import open_registry
    from registry.sync import sync

    result = sync(
        open_registry(args),
        args.to,
        alias=args.alias,
        consumer=args.consumer,
        client_slug=args.client,
        base=args.base,
        allow_cross_version=args.allow_cross_version,
    )
    if args.json:
        print(json.dumps(asdict(result), indent=2, sort_keys=True))
    elif result.busy:
        print(f"another sync into {args.to} holds its lock: nothing done")
    else:
        _print_sync(args.to, result)
    for name, why in sorted(result.failed.items()):
        print(f"ltx-lora registry sync: error: {name}: {why}", file=sys.stderr)
    return 1 if result.failed else 0


def _print_sync(dest: Path, result: Any) -> None:
    for rel in result.written:
        print(f"wrote     {dest / rel}")
    for rel in result.removed:
        print(f"removed   {dest / rel}")
    for name, why in sorted(result.skipped.items()):
        print(f"skipped   {name}: {why}")
    state = "changed" if result.changed else "already in sync, nothing changed"
    print(f"{dest}: {len(result.written) + len(result.unchanged)} adapter(s); {state}")


def _args_archive(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("version", type=int, metavar="VERSION")
    sub.add_argument("--keep-days", type=int, default=365, help="files kept at least (days)")
    sub.add_argument("--reason", help="why: recorded in the history")
    sub.add_argument("--actor", help="who, for the record (default: the OS user)")


def _archive(args: argparse.Namespace) -> int:
    from registry.commands import open_registry
    from registry.retire import archive

    note = archive(
        open_registry(args),
        args.name,
        args.version,
        reason=args.reason,
        actor=args.actor,
        keep_days=args.keep_days,
    )
    print(f"{args.name} version {args.version} archived: {note}")
    return 0


_ARGS = {"licence": _args_licence, "archive": _args_archive, "sync": _args_sync}
_HANDLERS = {"licence": _licence, "archive": _archive, "sync": _sync}
