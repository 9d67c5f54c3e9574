"""What a benchmark reports, and timing helpers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Result:
    """`ratio` = baseline_s / ours_s for throughput-style comparisons (1.0 = as fast as the
    baseline); `target` the ratio the issue asks for, when there is one."""

    name: str
    baseline: str
    baseline_s: float
    ours_s: float
    target: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.baseline_s / self.ours_s


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Fastest of `repeats` runs: the least disturbed by other load on a shared machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def format_table(results: list[Result]) -> str:
    """One row per result; `below` marks a ratio under its target."""
    head = (
        f"{'benchmark':36} {'baseline':30} {'base s':>9} {'ours s':>9} {'ratio':>6} {'target':>7}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        target = f"≥{r.target:.2f}" if r.target is not None else ""
        flag = "below " if r.target is not None and r.ratio < r.target else ""
        rows.append(
            f"{r.name:36} {r.baseline:30} {_secs(r.baseline_s)} {_secs(r.ours_s)} "
            f"{r.ratio:6.2f} {target:>7}  {flag}{r.note}".rstrip()
        )
    return "\n".join(rows)


def _secs(value: float) -> str:
    """Nine characters; sub-millisecond timings keep their digits instead of printing 0.000."""
    return f"{value:9.3f}" if value >= 0.01 else f"{value:9.2e}"


def machine_facts() -> dict[str, str]:
    """What the numbers were measured on: CPU model, cores, RAM, torch, GPU (or none)."""
    import os
    import platform

    facts = {
        "cpu": _cpu_model() or platform.processor() or platform.machine(),
        "cores": str(os.cpu_count()),
        "ram": _ram(),
        "python": platform.python_version(),
    }
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["gpu"] = (
            f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
            if torch.cuda.is_available()
            else "none"
        )
    except ImportError:
        facts["torch"], facts["gpu"] = "not installed", "unknown"
    return facts


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _ram() -> str:
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        return f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        return "unknown"
