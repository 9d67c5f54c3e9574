"""`make bench` / `python -m bench [name ...]`: run every bench/bench_*.py, print one table.

Each module has `run() -> list[Result]`. Ratios, not absolute times: these machines are shared
and noisy, so only measurements taken side by side in one run are compared. A full run (no
names) also writes the table, the date and the machine's facts into docs/benchmarks.md,
between its `bench:begin` / `bench:end` markers. GPU benchmarks (bench/gpu_*.py) are separate
commands: `python -m bench.gpu_transformer`.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from bench.common import Result, format_table, machine_facts

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def discover(names: list[str]) -> list[str]:
    here = [str(Path(__file__).parent)]
    found = sorted(m.name for m in pkgutil.iter_modules(here) if m.name.startswith("bench_"))
    return [m for m in found if not names or m.removeprefix("bench_") in names or m in names]


def run_all(modules: list[str]) -> tuple[list[Result], list[str]]:
    """Every module's results; a module that fails is reported, and the others still run."""
    results: list[Result] = []
    failed: list[str] = []
    for name in modules:
        print(f"running {name} ...", file=sys.stderr)
        try:
            results += importlib.import_module(f"bench.{name}").run()
        except Exception as e:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failed.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return results, failed


def report(table: str, failed: list[str], facts: dict[str, str], seconds: float) -> str:
    """The generated block of docs/benchmarks.md."""
    lines = [
        BEGIN,
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench` "
        f"({seconds / 60:.1f} min).",
        "",
        *(f"- {k}: {v}" for k, v in facts.items()),
        "",
        "```text",
        table,
        "```",
    ]
    if failed:
        lines += ["", "Did not run:", "", *(f"- {f}" for f in failed)]
    return "\n".join([*lines, END])


def write_report(block: str, path: Path = REPORT) -> None:
    """Replace the generated block, keeping the hand-written text around it."""
    from stagekit.files import write_text

    text = path.read_text() if path.is_file() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = f"{text.rstrip()}\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    write_text(path, head + block + rest.split(END, 1)[1])


def main(argv: list[str]) -> int:
    from stagekit.privacy import apply_offline_defaults

    apply_offline_defaults()
    start, load = time.perf_counter(), os.getloadavg()[0]  # others' work skews absolute times
    results, failed = run_all(discover(argv))
    table = format_table(results)
    print(table)
    for f in failed:
        print(f"did not run: {f}", file=sys.stderr)
    if not argv:  # only a full run speaks for the whole table
        facts = machine_facts()
        facts["load average (1 min) at start, end"] = f"{load:.1f}, {os.getloadavg()[0]:.1f}"
        write_report(report(table, failed, facts, time.perf_counter() - start))
        print(f"wrote {REPORT}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
