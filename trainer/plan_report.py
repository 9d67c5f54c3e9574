"""The cards a plan is checked against and what `ltx-lora plan` prints: the plan's terms, the
settings that fit, and the one line a run that will not fit stops with."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stagekit.errors import UserError
from trainer.plan_sizes import GIB, MIB

if TYPE_CHECKING:
    from trainer.plan import Plan, Setup


def parse_size(text: str) -> int:
    """'24GB', '24 GiB', '80' (GiB), '16384MiB' -> bytes. Cards are sold in binary gigabytes:
    GB and GiB both mean 2^30 bytes here."""
    match = re.fullmatch(r"\s*([\d.]+)\s*(gib|gb|g|mib|mb|m)?\s*", text.lower())
    if not match:
        raise UserError(f"--gpu {text!r}: give a memory size such as 24GB, 16GiB or 81920MiB")
    unit = MIB if (match[2] or "g").startswith("m") else GIB
    return int(float(match[1]) * unit)


@dataclass(frozen=True)
class Card:
    """The memory a plan must fit in."""

    name: str
    total: int

    @property
    def label(self) -> str:
        return f"{self.name} ({self.total / GIB:.1f} GiB)"


def detected_card() -> Card | None:
    """The CUDA card this process would train on (None: no CUDA GPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
    props = torch.cuda.get_device_properties(index)
    return Card(props.name, props.total_memory)


def host_ram() -> int:
    """This machine's memory: what a run here can hold on the host."""
    import psutil

    return psutil.virtual_memory().total


def changes(plan: Plan, setup: Setup) -> str:
    """The overrides that turn `setup` into `plan`'s settings."""
    mine, theirs = setup.knobs(), plan.setup.knobs()
    return " ".join(f"{k}={_value(v)}" for k, v in theirs.items() if mine[k] != v) or "(as is)"


def _value(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def format_plan(plan: Plan) -> str:
    """The table by component, labelled as planned."""
    s, f = plan.setup, plan.facts
    step = s.step
    lines = [
        f"memory plan (planned, not measured): {s.label}, "
        f"transformer {f['transformer_params'] / 1e9:.2f} B + connectors "
        f"{f['connectors_params'] / 1e9:.2f} B params",
        f"  clip {s.clip}; batch {step.video[0]}; video latents {list(step.video[1:])}; "
        f"{step.text_tokens} text tokens",
        f"  adapter {step.lora.kind} rank {step.lora.rank} on {step.lora.targets} "
        f"({f['adapter_numel'] / 1e6:.1f} M params); {step.optimizer}; gradient checkpointing "
        f"{'on' if step.checkpointing else 'off'}; attention {step.attention}; base "
        f"{s.quantize}; {s.blocks_to_swap} of {s.layers} blocks swapped",
    ]
    traced = _traced(plan)
    if plan.gpu:
        lines += _table("GPU", plan.gpu)
    lines += _table("host RAM" if plan.gpu else "host RAM (the step runs on the CPU)", plan.host)
    lines.append(f"  (the step: {traced})")
    return "\n".join(lines)


def _traced(plan: Plan) -> str:
    layers = plan.traced.layers if plan.traced else ()
    if not layers:
        return "not traced: its activations are missing above"
    if len(layers) == 1:
        return "traced on fake tensors, every block"
    blocks = "/".join(map(str, layers))
    return f"traced on fake tensors at {blocks} blocks, extrapolated to {plan.setup.layers}"


def _table(title: str, terms: dict[str, int]) -> list[str]:
    width = max(len(k) for k in terms) + 2
    rows = [f"{title}{'GiB':>{width + 10 - len(title)}}"]
    rows += [f"  {k:<{width}}{v / GIB:8.2f}" for k, v in terms.items()]
    rows.append(f"  {'total':<{width}}{sum(terms.values()) / GIB:8.2f}")
    return rows


def format_options(setup: Setup, card: Card, fitting: list[Plan], current: Plan) -> str:
    """Whether the config fits `card`, and every setting that does, fastest first."""
    verdict = "fits" if current.fits(card.total) else "does NOT fit"
    lines = [
        f"on {card.label}: this config {verdict} (planned {current.gpu_total / GIB:.1f} GiB "
        f"GPU, {current.host_total / GIB:.1f} GiB host RAM)"
    ]
    if not fitting:
        lines.append("  no setting fits: " + NOTHING_FITS)
        return "\n".join(lines)
    lines.append(
        "settings that fit, fastest first (format none < int8 < nf4, then checkpointing off < "
        "on, then fewer swapped blocks):"
    )
    rows = [(changes(plan, setup), plan) for plan in fitting]
    width = max(len(text) for text, _ in rows) + 2
    lines += [
        f"  {text:<{width}}GPU {plan.gpu_total / GIB:5.1f} GiB   host RAM "
        f"{plan.host_total / GIB:5.1f} GiB"
        for text, plan in rows
    ]
    return "\n".join(lines)


NOTHING_FITS = (
    "lower lora.rank, trainer.batch_size or the clip size (curation.frames, curation.buckets)"
)


def one_line(plan: Plan) -> str:
    """The plan in a line, for a run that nothing refuses (the CPU)."""
    terms = plan.gpu or plan.host
    top = sorted(terms.items(), key=lambda kv: -kv[1])[:3]
    where = "GPU" if plan.gpu else "host RAM (CPU run)"
    parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in top)
    missing = "" if plan.traced else "; the step not traced: `ltx-lora plan` traces it"
    total = sum(terms.values()) / GIB
    return f"memory plan: peak {where} {total:.2f} GiB planned ({parts}{missing})"
