"""`make bench` / `python -m bench [name ...]`: run every bench/bench_*.py, print one table.

Each module has `run() -> list[Result]`. Ratios, not absolute times: these machines are shared
and noisy, so only measurements taken side by side in one run are compared.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from bench.common import Result, format_table


def discover(names: list[str]) -> list[str]:
    here = [str(Path(__file__).parent)]
    found = sorted(m.name for m in pkgutil.iter_modules(here) if m.name.startswith("bench_"))
    return [m for m in found if not names or m.removeprefix("bench_") in names or m in names]


def main(argv: list[str]) -> int:
    from stagekit.privacy import apply_offline_defaults

    apply_offline_defaults()
    results: list[Result] = []
    for name in discover(argv):
        print(f"running {name} ...", file=sys.stderr)
        results += importlib.import_module(f"bench.{name}").run()
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
