"""Which adapter kind each consumer gets, and how: the table docs/exports.md is generated from.

Torch-free on purpose: the table is data, read by the exporter, the tests and the docs generator.
Each cell is `exact` (the consumer's own arithmetic on the file gives PEFT's merged weight),
`converted` (rewritten so that it does: alpha folded, a LoKr as the LoRA it equals, a DoRA
magnitude rewritten for the consumer's normalisation) or `refused` (no file; the reason and what
to choose instead). `limit` names a size condition under which a converted cell is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CONSUMERS = ("comfyui", "ltx-pipelines", "diffusers")
KINDS = ("lora", "dora", "lokr")

# The file each consumer loads, per stem (`adapter` final weights, `adapter_ema` the EMA copy).
# `adapter.safetensors` is the diffusers one and the registry's identity of a version.
FILE_STEMS = {"diffusers": "adapter", "comfyui": "comfyui", "ltx-pipelines": "ltx-pipelines"}
EXPORTS_RECORD = "exports.json"  # per stem: consumer -> file, outcome, verified_by or reason


@dataclass(frozen=True)
class Outcome:
    """One cell: what the export does for this kind and consumer, and why."""

    result: Literal["exact", "converted", "refused"]
    how: str  # what is written (or why nothing is), one line
    instead: str = ""  # for refusals: what to choose instead
    limit: str = ""  # converted only up to this size; refused beyond it, with this reason


_LOKR_AS_LORA_LIMIT = (
    "refused when the equal LoRA has more parameters than the dense update it encodes "
    "(rank(w1)·rank(w2) above out·in/(out+in)): choose kind=lora, or the comfyui file"
)

TABLE: dict[tuple[str, str], Outcome] = {
    ("lora", "comfyui"): Outcome(
        "exact",
        "`diffusion_model.<official>.lora_A/B.weight` + `.alpha` where alpha ≠ rank; ComfyUI "
        "scales B·A by alpha/rank itself",
    ),
    ("lora", "ltx-pipelines"): Outcome(
        "converted",
        "`diffusion_model.<official>.lora_A/B.weight`, alpha/rank folded into lora_B (ltx-core "
        "fuses B·strength @ A and ignores `.alpha`)",
    ),
    ("lora", "diffusers"): Outcome(
        "converted",
        "`transformer.<module>.lora_A/B.weight`, alpha/rank folded into lora_B, header "
        "lora_alpha = rank (diffusers refuses `.alpha` keys)",
    ),
    ("dora", "comfyui"): Outcome(
        "converted",
        "LoRA keys (alpha/rank folded) + `dora_scale` [out, 1] rewritten to m·(‖W‖+eps)/‖W+ΔW‖ "
        "per row: ComfyUI divides by the base row norm ‖W‖, PEFT by ‖W+ΔW‖ (exact on the base "
        "it was trained on)",
    ),
    ("dora", "ltx-pipelines"): Outcome(
        "refused",
        "ltx-core fuses only lora_A/lora_B pairs and drops `dora_scale` without a word; DoRA's "
        "per-row rescale of the base weight is full-rank, so no LoRA pair equals it",
        instead="train kind=lora for ltx-pipelines, or load the comfyui file in ComfyUI or the "
        "diffusers file in diffusers",
    ),
    ("dora", "diffusers"): Outcome(
        "converted",
        "`transformer.…lora_A/B.weight` + `lora_magnitude_vector` (PEFT's DoRA, which diffusers "
        "loads), alpha/rank folded into lora_B",
    ),
    ("lokr", "comfyui"): Outcome(
        "converted",
        "LyCORIS `lokr_w1`/`lokr_w2` (or `_a`/`_b` factors): ComfyUI scales by alpha/dim only "
        "for a decomposed factor, so PEFT's alpha/rank is folded into `lokr_w2` otherwise",
    ),
    ("lokr", "ltx-pipelines"): Outcome(
        "converted",
        "the LoRA it equals: kron(B1,B2)·scale @ kron(A1,A2), rank rank(w1)·rank(w2) (ltx-core "
        "skips LoKr keys)",
        limit=_LOKR_AS_LORA_LIMIT,
    ),
    ("lokr", "diffusers"): Outcome(
        "converted",
        "the LoRA it equals, in diffusers keys (diffusers 0.42.1 refuses LoKr keys)",
        limit=_LOKR_AS_LORA_LIMIT,
    ),
}


def outcome(kind: str, consumer: str) -> Outcome:
    """The cell for `kind` × `consumer`; a KeyError names the known ones."""
    if (kind, consumer) not in TABLE:
        raise KeyError(f"no export rule for kind {kind!r} × consumer {consumer!r}")
    return TABLE[(kind, consumer)]


def refusal(kind: str, consumer: str, why: str | None = None) -> str:
    """The one-line message of a refused cell (or of a converted cell over its size limit)."""
    cell = outcome(kind, consumer)
    reason = why or cell.how
    instead = cell.instead or cell.limit.split(": ", 1)[-1]
    return f"no {consumer} file for a {kind} adapter: {reason}; instead: {instead}"


def file_name(consumer: str, stem: str = "adapter") -> str:
    """`adapter` → adapter/comfyui/ltx-pipelines.safetensors; `adapter_ema` → …_ema."""
    suffix = stem.removeprefix("adapter")
    return f"{FILE_STEMS[consumer]}{suffix}.safetensors"


def markdown_table() -> str:
    """The table as Markdown, kinds down, consumers across (docs/exports.md)."""
    head = "| kind | " + " | ".join(f"`{c}`" for c in CONSUMERS) + " |"
    rule = "|---|" + "---|" * len(CONSUMERS)
    rows = [head, rule]
    for kind in KINDS:
        cells = [_cell(outcome(kind, c)) for c in CONSUMERS]
        rows.append(f"| `{kind}` | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


DOCS_START, DOCS_END = "<!-- exports-table:start -->", "<!-- exports-table:end -->"


def write_docs(path: str = "docs/exports.md") -> None:
    """Replace the table between the markers in `path` with `markdown_table()`."""
    from pathlib import Path

    text = Path(path).read_text(encoding="utf-8")
    head, rest = text.split(DOCS_START, 1)
    tail = rest.split(DOCS_END, 1)[1]
    body = f"{DOCS_START}\n{markdown_table()}{DOCS_END}"
    Path(path).write_text(head + body + tail, encoding="utf-8")


def _cell(cell: Outcome) -> str:
    text = f"**{cell.result}**: {cell.how}"
    if cell.instead:
        text += f". Instead: {cell.instead}"
    if cell.limit:
        text += f". Size limit: {cell.limit}"
    return text.replace("|", "\\|")


if __name__ == "__main__":  # python -m ltx.exports: regenerate docs/exports.md's table
    write_docs()
