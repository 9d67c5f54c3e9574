"""`ltx-lora registry list | show | compare | lineage`: reading the registry, as text or JSON."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from registry import agency
from registry.names import CI_SUFFIXES

if TYPE_CHECKING:
    from mlflow import MlflowClient


def _args_list(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--client", help="only this client's adapters")


def _args_ref(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("ref", metavar="NAME@ALIAS|VERSION", help="e.g. acme.mascot@champion")


def _args_compare(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("a", metavar="NAME@REF")
    sub.add_argument("b", metavar="NAME@REF", help="or just @REF: the same name as the first")


def _list(args: argparse.Namespace) -> int:
    from registry.read import list_models

    rows = list_models(_open(args), args.client)
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

    info = show(_open(args), *parse_ref(args.ref))
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
    out = compare(_open(args), a, b)
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

    out = lineage(_open(args), *parse_ref(args.ref))
    if args.json:
        return _print_json(out)
    print(f"{out['name']} version {out['version']}")
    for group in ("data", "code", "base model", "run"):
        for k, v in out[group].items():
            print(f"  {group:11} {k:16} {v}")
    return 0


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = "-" if value is None else str(value)
    return text if len(text) <= 30 else text[:28] + "…"


def _open(args: argparse.Namespace) -> MlflowClient:
    from registry.commands import open_registry  # imported late: commands imports this module

    return open_registry(args)


def _print_json(obj: Any) -> int:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return 0


ARGS = {"list": _args_list, "show": _args_ref, "compare": _args_compare, "lineage": _args_ref}
HANDLERS = {"list": _list, "show": _show, "compare": _compare, "lineage": _lineage}
