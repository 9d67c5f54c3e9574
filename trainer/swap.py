"""Block swap: the frozen Linear weights of the last N transformer blocks live on a storage
device (pinned host memory) and stream to the compute device just before each block runs.

Why our own streamer: diffusers' group offloading hooks only the forward (and its stream mode
resets LoRA weights from its snapshot), and accelerate's `cpu_offload` leaves the LoRA without
gradients (issue 16). The design is kohya musubi-tuner's H2D-only offloader:

- only the frozen Linear weights and biases of the swapped blocks stream; the adapter (LoRA
  A/B, DoRA magnitude, LoKr factors), norms and scale-shift tables stay on the compute device;
- masters stay on the storage device and are copied into a ring of >= 2 block-sized device
  buffers (a side stream on CUDA, a plain copy elsewhere), prefetched ahead of each block's
  forward and, in backward, of its checkpoint recomputation: a forward pre-hook sees both.
  Nothing is copied back: the base is frozen;
- gradient checkpointing is required: without it autograd would keep each block's weights
  for backward while the ring overwrites them;
- while its block is not resident a weight is an `Evicted` placeholder (zero elements, on
  meta) that raises on any computation, naming the weight.

Quantised weights stream as they are: a tensor subclass with `__tensor_flatten__`
(optimum-quanto's qint8 / qfloat8 / qint4, torchao's) moves its inner tensors and is rebuilt
around the device copies; bitsandbytes' 4-bit `Params4bit` moves its packed data and block
scales (its codebooks stay resident); any other weight class that keeps tensors outside the
tensor (bitsandbytes' `Int8Params`) is refused.

How one weight is taken apart, moved and rebuilt is in `trainer/swap_weights.py`. The storage
and compute devices may both be the CPU: tests run this same code path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch

from stagekit.errors import ConfigError
from trainer.swap_weights import (
    Bnb4bit,
    Evicted,
    PlainCopy,
    StreamCopy,
    Tree,
    flatten,
    master,
    nbytes,
    parameter,
    rebuild,
)

RING = 2  # device buffers: the block running and the next one arriving
ALIGN = 512  # bytes: every tensor in a ring buffer starts as aligned as an allocation would
RECORD = 4096  # residency events kept (the newest)


@dataclass(frozen=True)
class Residency:
    """One event of the streamer: `forward`/`backward` (a swapped block about to run, in
    backward its checkpoint recomputation), `load` or `evict`; the swapped blocks (indices in
    `transformer_blocks`) resident on the compute device right after it."""

    event: Literal["forward", "backward", "load", "evict"]
    block: int
    resident: tuple[int, ...]


@dataclass
class _Weight:
    """One streamed parameter: its plain leaf tensors' masters on the storage device."""

    module: torch.nn.Module
    name: str  # "weight" | "bias"
    tree: Tree | Bnb4bit | None  # None: a plain tensor
    masters: list[torch.Tensor]
    placeholder: Evicted


@dataclass
class _Block:
    index: int  # in transformer_blocks
    weights: list[_Weight]
    offsets: list[int]  # of each leaf in a ring buffer, in weight order
    nbytes: int


class BlockSwap:
    """Streams the frozen Linear weights of `transformer_blocks[-count:]` through a ring of
    device buffers; `record` holds the newest residency events, `loads` and `misses` (a block
    needed but not prefetched: loaded synchronously) count what happened."""

    def __init__(
        self,
        transformer: torch.nn.Module,
        count: int,
        storage: torch.device,
        compute: torch.device,
        ring: int = RING,
    ) -> None:
        if ring < 2:
            raise ValueError(f"block swap needs a ring of at least 2 buffers, not {ring}")
        blocks = transformer.transformer_blocks
        pin = storage.type == "cpu" and compute.type == "cuda"
        self.transformer, self.storage, self.compute = transformer, storage, compute
        self._blocks = [
            _take(blocks[i], i, storage, compute, pin)
            for i in range(len(blocks) - count, len(blocks))
        ]
        size = max(b.nbytes for b in self._blocks)
        self._slots = [
            torch.empty(size, dtype=torch.uint8, device=compute) for _ in range(min(ring, count))
        ]
        self._holder: list[int | None] = [None] * len(self._slots)  # block position per slot
        self._slot_of: dict[int, int] = {}
        self._copy = StreamCopy(compute) if compute.type == "cuda" else PlainCopy()
        self.record: deque[Residency] = deque(maxlen=RECORD)
        self.loads = self.misses = 0
        self._hooks = [
            blocks[b.index].register_forward_pre_hook(partial(self._before, pos))
            for pos, b in enumerate(self._blocks)
        ]
        for pos in range(len(self._slots)):  # the first blocks the next forward needs
            self._load(pos, pos)

    @property
    def blocks(self) -> list[int]:
        """Indices (in `transformer_blocks`) of the swapped blocks."""
        return [b.index for b in self._blocks]

    @property
    def ring(self) -> int:
        """Device buffers, each one block's worth (`buffer_bytes`)."""
        return len(self._slots)

    @property
    def buffer_bytes(self) -> int:
        return self._slots[0].numel()

    @property
    def resident(self) -> tuple[int, ...]:
        """Swapped blocks whose weights are on the compute device now."""
        return tuple(sorted(self._blocks[p].index for p in self._slot_of))

    def close(self) -> None:
        """Stop streaming: every weight goes back as a frozen parameter of its module, on the
        storage device; the ring is freed."""
        for hook in self._hooks:
            hook.remove()
        self._copy.sync()
        for block in self._blocks:
            for w in block.weights:
                value = rebuild(w.tree, iter(w.masters))
                w.module.__dict__.pop(w.name, None)
                w.module._parameters[w.name] = parameter(value)
        self._slots, self._holder, self._slot_of, self._hooks = [], [], {}, []

    # ------------------------------------------------------------------------------- hooks

    def _before(self, pos: int, _module: torch.nn.Module, _args: Any) -> None:
        """Make block `pos` resident before it runs, then prefetch what runs after it."""
        backward = torch._C._current_graph_task_id() != -1  # a checkpoint recomputation
        grad = torch.is_grad_enabled()
        if grad and not backward and not self.transformer.gradient_checkpointing:
            raise RuntimeError(
                "block swap needs gradient checkpointing: a swapped block ran with gradients "
                "but without recomputation, so autograd would keep weights the ring "
                "overwrites (call transformer.enable_gradient_checkpointing())"
            )
        wanted = self._upcoming(pos, backward, grad)
        keep = {pos, *wanted}
        if pos not in self._slot_of:
            self.misses += 1
            self._load(pos, self._victim(keep))
        self._copy.wait(self._slot_of[pos])
        self._note("backward" if backward else "forward", pos)
        for q in wanted:
            if q not in self._slot_of:
                self._load(q, self._victim(keep))

    def _upcoming(self, pos: int, backward: bool, grad: bool) -> list[int]:
        """The next `ring - 1` distinct swapped blocks after `pos`: the rest of this pass,
        in backward descending (recomputation runs last block first), then the next forward."""
        m = len(self._blocks)
        if backward:
            order: Iterable[int] = range(pos - 1, -1, -1)
        else:
            order = range(pos + 1, m)
            if grad:  # a backward follows: it recomputes the swapped blocks in reverse
                order = [*order, *range(m - 1, -1, -1)]
        wanted: list[int] = []
        for q in [*order, *range(m)]:
            if len(wanted) == len(self._slots) - 1:
                break
            if q != pos and q not in wanted:
                wanted.append(q)
        return wanted

    def _victim(self, keep: set[int]) -> int:
        """A free slot, else one whose block is needed neither now nor next. In backward that
        block's recomputed graph has run (its output gradient needed it): safe to overwrite."""
        for slot, held in enumerate(self._holder):
            if held is None or held not in keep:
                return slot
        raise AssertionError("block swap: every ring buffer is still needed")

    # --------------------------------------------------------------------- moving weights

    def _load(self, pos: int, slot: int) -> None:
        if (old := self._holder[slot]) is not None:
            self._evict(old)
        block = self._blocks[pos]
        buffer = self._slots[slot]
        masters = [m for w in block.weights for m in w.masters]
        views = [
            buffer[o : o + nbytes(m)].view(m.dtype).view(m.shape)
            for o, m in zip(block.offsets, masters, strict=True)
        ]
        self._copy.start(slot, zip(views, masters, strict=True))
        leaves = iter(views)
        for w in block.weights:
            value = rebuild(w.tree, leaves)
            w.module.__dict__[w.name] = parameter(value)
        self._holder[slot], self._slot_of[pos] = pos, slot
        self.loads += 1
        self._note("load", pos)

    def _evict(self, pos: int) -> None:
        for w in self._blocks[pos].weights:
            w.module.__dict__[w.name] = w.placeholder
        self._holder[self._slot_of.pop(pos)] = None
        self._note("evict", pos)

    def _note(self, event: str, pos: int) -> None:
        self.record.append(Residency(event, self._blocks[pos].index, self.resident))  # type: ignore[arg-type]


def attach_swap(
    transformer: torch.nn.Module,
    blocks_to_swap: int | Literal["auto"],
    storage: torch.device | str,
    compute: torch.device | str,
    *,
    ring: int = RING,
) -> BlockSwap | None:
    """Stream the frozen Linear weights of the last `blocks_to_swap` transformer blocks from
    `storage` to `compute` (None for 0). Call it once the adapter is attached and gradient
    checkpointing is on, before the rest of the transformer moves to `compute`, so the
    swapped weights never reach that device whole."""
    if blocks_to_swap == "auto":
        raise ConfigError(
            "trainer.blocks_to_swap=auto is resolved by the memory plan against a GPU's memory; "
            "without a GPU there is no budget to plan for: set a number of blocks instead "
            "(e.g. trainer.blocks_to_swap=8)"
        )
    if blocks_to_swap == 0:
        return None
    total = len(transformer.transformer_blocks)
    if not 0 < blocks_to_swap <= total:
        raise ConfigError(
            f"trainer.blocks_to_swap={blocks_to_swap}, but the transformer has {total} blocks: "
            f"use 0 to {total}"
        )
    if not getattr(transformer, "gradient_checkpointing", False):
        raise ConfigError(
            "trainer.blocks_to_swap needs trainer.gradient_checkpointing=true: each swapped "
            "block is streamed in again for its recomputation in backward"
        )
    return BlockSwap(
        transformer, blocks_to_swap, torch.device(storage), torch.device(compute), ring
    )


# ------------------------------------------------------------------------------- helpers


def _take(
    block: torch.nn.Module, index: int, storage: torch.device, compute: torch.device, pin: bool
) -> _Block:
    """Move the frozen Linear weights of `block` to their masters, leaving placeholders."""
    weights: list[_Weight] = []
    for path, module in block.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        params = {n: p for n, p in module._parameters.items() if p is not None}
        if any(p.requires_grad for p in params.values()):
            continue  # trained (lora_A / lora_B): stays resident
        for name, param in params.items():
            where = f"transformer_blocks.{index}.{path}.{name}"
            tree, leaves = flatten(param, where, compute)
            masters = [master(t, storage, pin) for t in leaves]
            placeholder = Evicted(where, param.dtype)
            del module._parameters[name]
            module.__dict__[name] = placeholder
            weights.append(_Weight(module, name, tree, masters, placeholder))
    offsets, end = [], 0
    for m in (m for w in weights for m in w.masters):
        start = -(-end // ALIGN) * ALIGN
        offsets.append(start)
        end = start + nbytes(m)
    return _Block(index, weights, offsets, end)
