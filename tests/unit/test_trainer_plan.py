"""The memory plan (trainer.plan, trainer.plan_trace) on CPU.

- The step traced on fake tensors allocates exactly what the same step allocates eagerly, on
  the tiny and demo models (byte for byte, after one warm-up step: the first step a process runs
  allocates 16 bytes once), checkpointed or not, fused or math attention, video only or not.
- A deeper transformer's peak extrapolated from 2, 3 and 4 traced blocks equals its full trace.
- The analytic bytes of each quantised format equal what trainer.quantize stores.
- The search for settings that fit, and the refusal before loading, on full-size parameter
  counts with a stubbed trace.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from ltx.config import ModelConfig
from ltx.versions import VERSIONS
from stagekit.errors import UserError
from trainer import plan as memory
from trainer import plan_report as report
from trainer import plan_sizes as sizes
from trainer.config import LoraConfig, TrainerConfig
from trainer.plan_trace import StepPeak, StepShape, build, run_step, step_peak, trace

GIB = 1 << 30


def shape(model: str = "tiny", version: str = "2.0", **changes) -> StepShape:
    """One step of the tiny (or demo) model on a 9x64x96 clip with audio."""
    cfg = ModelConfig(name=model, source=model, ltx_version=version)
    configs = sizes.model_configs(cfg)
    latents = sizes.latents_for_clip(cfg, configs["transformer"], 9, 64, 96, 24.0, True)
    setup = memory.make_setup(
        cfg, LoraConfig(rank=4, targets="all"), TrainerConfig(), configs, latents, "cpu"
    )
    return replace(setup.step, **changes)


def eager(step: StepShape) -> StepPeak:
    """The same step on real tensors (random weights), counted the same way."""
    torch.manual_seed(0)
    return run_step(step, *build(step, "cpu"))


@pytest.fixture(scope="module", autouse=True)
def warm_up() -> None:
    """The first step a process runs allocates a few bytes once; run it before comparing."""
    eager(shape())
    trace(shape())


@pytest.mark.parametrize(
    "step",
    [
        shape(checkpointing=True),
        shape(version="2.3", strategy="text_to_video", audio=None),
        shape("demo", checkpointing=True, attention="math"),
        shape(checkpointing=True, lora=LoraConfig(kind="lokr", rank=4, targets="all")),
    ],
    ids=["tiny-checkpointed", "tiny-2.3-video-only", "demo-checkpointed-math", "lokr"],
)
def test_traced_peak_equals_the_eager_peak(step: StepShape) -> None:
    traced, measured = trace(step), eager(step)
    assert traced.peak == measured.peak
    assert traced.gradients == measured.gradients
    assert traced.peak > 0


def test_deeper_transformer_is_extrapolated_exactly() -> None:
    step = shape()
    deep = replace(step, transformer={**step.transformer, "num_layers": 5})
    extrapolated = step_peak(deep)
    assert extrapolated.layers == (2, 3, 4)  # probes on a line: not traced whole
    assert abs(extrapolated.peak - trace(deep).peak) <= 16  # the once-per-process bytes


@pytest.mark.parametrize("fmt", ["int8", "fp8", "nf4"])
def test_quantized_bytes_are_what_quantize_stores(fmt: str) -> None:
    quantize = pytest.importorskip("trainer.quantize")
    for dtype in (torch.float32, torch.bfloat16):
        linear = torch.nn.Linear(512, 384, dtype=dtype)
        stored = quantize.stored_bytes(quantize.quantize_linear(linear, fmt, "cpu").weight)
        size = torch.empty((), dtype=dtype).element_size()
        assert sizes.quantized_bytes(512 * 384, 384, 1, fmt, size) == stored


def test_parse_size() -> None:
    assert report.parse_size("24GB") == 24 * GIB
    assert report.parse_size("16 GiB") == 16 * GIB
    assert report.parse_size("81920MiB") == 80 * GIB
    with pytest.raises(UserError, match="24GB"):
        report.parse_size("lots")


# --------------------------------------------------------- full-size counts, a stubbed trace


class StubCache(memory.PlanCache):
    """Real full-size parameter counts; a fixed step instead of a trace (the integration test
    traces the real one): 5 GiB checkpointed, 80 GiB not."""

    facts_memo: ClassVar[dict] = {}

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(None)

    def step_peak(self, step: StepShape, trace: bool = True) -> StepPeak:
        return StepPeak((5 if step.checkpointing else 80) * GIB, 0, (2, 3, 4))

    def facts(self, step: StepShape) -> dict:
        key = repr((step.dtype, step.lora, sorted(step.transformer.items())))
        if key not in self.facts_memo:
            self.facts_memo[key] = sizes.model_facts(step)
        return self.facts_memo[key]


LTX2 = ModelConfig(name="ltx2", source="diffusers", ltx_version="2.0", dtype="bfloat16")


def full_setup(**trainer) -> memory.Setup:
    configs = {n: dict(VERSIONS["2.0"].configs[n]) for n in ("transformer", "connectors")}
    latents = sizes.latents_for_clip(LTX2, configs["transformer"], 121, 512, 768, 24.0, True)
    cfg = TrainerConfig(**trainer)
    return memory.make_setup(LTX2, LoraConfig(rank=32, alpha=32), cfg, configs, latents, "cuda")


def test_full_size_weights_by_format() -> None:
    plans = {
        fmt: memory.make_plan(full_setup().vary(fmt, True, 0), StubCache())
        for fmt in ("none", "int8", "nf4")
    }
    weights = {
        fmt: next(v for k, v in p.gpu.items() if k.startswith("base")) for fmt, p in plans.items()
    }
    # docs/training.md, "Quantised base": 35.2 / 17.9 / 9.6 GiB for the 2.0 transformer
    assert [round(weights[f] / GIB, 1) for f in ("none", "int8", "nf4")] == [35.2, 17.9, 9.6]
    assert plans["none"].facts["transformer_params"] == 18_876_174_592  # FIELD-NOTES
    assert plans["none"].facts["adapter_numel"] == 100_663_296


def test_options_fit_fastest_first() -> None:
    setup = full_setup(gradient_checkpointing=True)
    fitting = memory.options(setup, 24 * GIB, StubCache())
    assert fitting and all(p.gpu_total <= 24 * GIB for p in fitting)
    formats = [p.setup.quantize for p in fitting]
    assert formats == sorted(formats, key=memory.FASTEST_FIRST.index)
    for plan in fitting:  # the fewest swapped blocks: one fewer would not fit
        if plan.setup.blocks_to_swap:
            fewer = replace(plan.setup, blocks_to_swap=plan.setup.blocks_to_swap - 1)
            assert not memory.make_plan(fewer, StubCache()).fits(24 * GIB)
    assert memory.options(setup, 1 * GIB, StubCache()) == []


def test_options_within_a_host_ram_budget() -> None:
    """Swapping a bf16 base's blocks fits the card but needs their pinned copies on the host:
    with 32 GiB of RAM only the quantised settings are listed, each within both budgets."""
    setup = full_setup(gradient_checkpointing=True)
    unbounded = memory.options(setup, 24 * GIB, StubCache())
    assert unbounded[0].setup.quantize == "none" and unbounded[0].host_total > 32 * GIB
    bounded = memory.options(setup, 24 * GIB, StubCache(), ram=32 * GIB)
    assert bounded and all(p.host_total <= 32 * GIB < unbounded[0].host_total for p in bounded)
    assert [p.setup.quantize for p in bounded] == ["int8", "nf4"]
    assert [report.changes(p, setup) for p in bounded] == [
        report.changes(p, setup) for p in unbounded if p.setup.quantize != "none"
    ]


def test_checkpointing_is_turned_on_when_it_must_be() -> None:
    setup = full_setup()  # checkpointing off: 80 GiB of activations fit nothing
    fitting = memory.options(setup, 24 * GIB, StubCache())
    assert fitting and all(p.setup.step.checkpointing for p in fitting)
    assert "trainer.gradient_checkpointing=true" in report.changes(fitting[0], setup)


def write_cache(root: Path) -> dict:
    """A latent cache holding one full-size sample's shapes (121x512x768 with audio)."""
    from safetensors.torch import save_file

    save_file(
        {
            "video": torch.zeros(128, 16, 16, 24, dtype=torch.bfloat16),
            "audio": torch.zeros(8, 126, 16, dtype=torch.bfloat16),
            "text_length": torch.tensor([1024]),
        },
        root / "c.safetensors",
    )
    entry = {"file": "c.safetensors", "bucket": [768, 512, 121], "fps": 24.0, "split": "train"}
    return {"entries": {"c": entry}}


def test_over_budget_is_refused_naming_the_knob(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(memory, "PlanCache", StubCache)
    index = write_cache(tmp_path)
    card = report.Card("RTX 4090", 24 * GIB)
    cfg = TrainerConfig(gradient_checkpointing=True)
    with pytest.raises(UserError) as err:
        memory.plan_training(
            tmp_path, index, tmp_path, LTX2, LoraConfig(rank=32, alpha=32), cfg, card=card
        )
    message = str(err.value)
    assert "will not fit RTX 4090" in message and "\n" not in message
    assert "trainer.blocks_to_swap=" in message or "model.quantize=" in message
    # the knob it names fits
    fixed = memory.plan_training(
        tmp_path,
        index,
        tmp_path,
        LTX2,
        LoraConfig(rank=32, alpha=32),
        cfg.model_copy(update={"blocks_to_swap": "auto"}),
        card=card,
    )
    assert fixed.blocks_to_swap > 0


def test_cpu_run_is_never_refused(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(memory, "PlanCache", StubCache)
    index = write_cache(tmp_path)
    cfg = TrainerConfig()
    lora = LoraConfig(rank=32, alpha=32)
    assert memory.plan_training(tmp_path, index, tmp_path, LTX2, lora, cfg) == cfg
    line = capsys.readouterr().out.strip()
    assert line.startswith("memory plan: peak host RAM (CPU run)") and "\n" not in line
