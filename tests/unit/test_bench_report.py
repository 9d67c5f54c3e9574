"""`python -m bench`: one table, and its block in docs/benchmarks.md replaced in place."""

from __future__ import annotations

from pathlib import Path

from bench.__main__ import BEGIN, END, discover, report, write_report
from bench.common import Result, format_table, machine_facts


def test_discovery_finds_every_benchmark_and_filters_by_name() -> None:
    found = discover([])
    assert {"bench_trainer", "bench_preprocess", "bench_registry", "bench_curation"} <= set(found)
    assert not any(name.startswith("gpu_") for name in found)  # GPU benches run on their own
    assert discover(["trainer"]) == ["bench_trainer"]


def test_table_marks_rows_below_target_and_keeps_tiny_timings() -> None:
    table = format_table(
        [
            Result("fast", "base", 2.0, 1.0, target=1.5, note="a"),
            Result("slow", "base", 1.0, 2.0, target=0.9, note="b"),
            Result("tiny", "base", 0.0001, 0.0002),
        ]
    )
    rows = table.splitlines()[2:]
    assert "2.00" in rows[0] and "below" not in rows[0]
    assert "0.50" in rows[1] and "below b" in rows[1]
    assert "1.00e-04" in rows[2] and "2.00e-04" in rows[2]


def test_report_block_is_replaced_and_hand_written_text_kept(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\nintro\n\n{BEGIN}\nold table\n{END}\n\n## GPU\n\nnotes\n")
    facts = machine_facts()
    assert {"cpu", "cores", "ram", "torch", "gpu"} <= set(facts)
    write_report(report("NEW TABLE", ["bench_x: RuntimeError: boom"], facts, 90.0), page)
    text = page.read_text()
    assert "intro" in text and "## GPU\n\nnotes" in text
    assert "old table" not in text and "NEW TABLE" in text and "(1.5 min)" in text
    assert f"- cores: {facts['cores']}" in text and "bench_x: RuntimeError: boom" in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
