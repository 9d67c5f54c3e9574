"""bench/gpu_memory.py: refuses cleanly without a GPU; measures the configs issue 16 names; its
piecewise build, quantisation, block swap and LoRA step run end to end at tiny size on CPU."""

from __future__ import annotations

import pytest
import torch

from bench import gpu_memory as bench
from bench import gpu_transformer as gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the bench runs")
def test_without_a_gpu_it_says_so_and_exits_2(capsys) -> None:
    assert bench.main(["--steps", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "needs a CUDA GPU" in captured.err and "nothing was measured" in captured.err


def test_the_configs_and_budgets_are_the_issues() -> None:
    got = [(c.name, c.quantize, c.budget_gb) for c in bench.CONFIGS]
    assert got == [
        ("bf16", "none", None),
        ("int8", "int8", None),
        ("nf4", "nf4", None),
        ("int8+swap", "int8", 24),
        ("nf4+swap", "nf4", 16),
    ]


@pytest.mark.parametrize(("quantize", "swapped"), [("int8", 1), ("nf4", 1)])
def test_tiny_build_quantise_swap_and_one_lora_step_on_cpu(quantize: str, swapped: int) -> None:
    from trainer.quantize import quantization_of

    w = gpu.tiny()
    model, params, swap = bench.prepare(w, quantize, "cpu", torch.float32, blocks_to_swap=swapped)
    assert quantization_of(model) == quantize
    assert swap is not None and swap.blocks == [len(model.transformer_blocks) - 1]
    assert params and all("lora" in n for n in params)
    assert not any(p.is_meta for p in params.values())

    inputs = gpu.make_inputs(w, model, "cpu")
    video, audio = model(**inputs)
    (video.float().pow(2).mean() + audio.float().pow(2).mean()).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == set(params)  # gradients on the adapter, nothing else
    assert all(torch.isfinite(p.grad).all() for p in params.values())
    events = {(r.event, r.block) for r in swap.record}
    assert {("forward", swap.blocks[0]), ("backward", swap.blocks[0])} <= events

    before = [p.detach().clone() for p in params.values()]
    optimizer = torch.optim.AdamW(list(params.values()), lr=1e-3)
    assert bench.train_step(model, inputs, optimizer) > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, params.values(), strict=True))


def test_plan_beside_the_tiny_run() -> None:
    """The plan's figures for a config come from the same shapes (traced at tiny size)."""
    from trainer.plan import PlanCache, make_plan

    setup = bench.plan_setup(gpu.tiny(), "int8", "cpu", dtype="float32")
    assert setup.quantize == "int8" and setup.step.checkpointing
    assert setup.step.lora.rank == 4 and setup.step.audio is not None
    plan = make_plan(setup, PlanCache(None))
    assert plan.traced is not None and plan.host_total > 0


def test_the_report_prints_measured_beside_planned_and_the_ratios() -> None:
    row = {
        "blocks_to_swap": 0,
        "plan_allocated": 20 * bench.GIB,
        "plan_reserved": 22 * bench.GIB,
        "plan_host": 4 * bench.GIB,
        "allocated": 20 * bench.GIB,
        "reserved": 22 * bench.GIB,
        "host_rss": 4 * bench.GIB,
        "build_s": 30.0,
    }
    rows = [
        {**row, "config": "bf16", "step_s": 2.0},
        {**row, "config": "int8", "step_s": 2.2},
        {"config": "nf4", "error": "exit 1: OutOfMemoryError"},
    ]
    text = bench.format_table(rows, "test card")
    assert "| int8 | 0 | 20.0 (20.0) | 22.0 (22.0) | 4.0 (4.0) | 2.20 | 30 |" in text
    assert "int8 step / bf16 step: 1.10 (target <= 1.25)" in text
    assert "| nf4 |  | did not run: exit 1: OutOfMemoryError" in text
