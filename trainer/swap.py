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

The storage and compute devices may both be the CPU: tests run this same code path.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves

from stagekit.errors import ConfigError

RING = 2  # device buffers: the block running and the next one arriving
ALIGN = 512  # bytes: every tensor in a ring buffer starts as aligned as an allocation would
RECORD = 4096  # residency events kept (the newest)

_METADATA = {  # reading these from a placeholder is harmless: it is empty and on meta
    torch.Tensor.shape.__get__,
    torch.Tensor.dtype.__get__,
    torch.Tensor.device.__get__,
    torch.Tensor.is_meta.__get__,
    torch.Tensor.requires_grad.__get__,
    torch.Tensor.numel,
    torch.Tensor.size,
    torch.Tensor.dim,
}


class EvictedWeightError(RuntimeError):
    """A streamed weight was used while its block was not on the compute device."""


class Evicted(torch.Tensor):
    """Placeholder of a streamed weight whose block is not resident: zero elements on the
    meta device; metadata reads work, any computation raises `EvictedWeightError`."""

    where: str

    @staticmethod
    def __new__(cls, where: str, dtype: torch.dtype) -> Evicted:
        placeholder = torch.Tensor._make_subclass(cls, torch.empty(0, dtype=dtype, device="meta"))
        placeholder.where = where
        return placeholder

    def __repr__(self) -> str:
        return f"Evicted({self.where})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in _METADATA:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))
        where = next(t.where for t in tree_leaves((args, kwargs)) if isinstance(t, Evicted))
        raise EvictedWeightError(
            f"{where} is evicted by block swap (trainer.blocks_to_swap): its block is not on "
            "the compute device. Run the whole block (its forward pre-hook streams it in), or "
            "call BlockSwap.close() first to put every weight back"
        )


@dataclass(frozen=True)
class Residency:
    """One event of the streamer: `forward`/`backward` (a swapped block about to run, in
    backward its checkpoint recomputation), `load` or `evict`; the swapped blocks (indices in
    `transformer_blocks`) resident on the compute device right after it."""

    event: Literal["forward", "backward", "load", "evict"]
    block: int
    resident: tuple[int, ...]


@dataclass(frozen=True)
class _Tree:
    """How to rebuild a tensor subclass from its inner tensors (`__tensor_unflatten__`)."""

    cls: type
    ctx: Any
    size: torch.Size
    stride: tuple[int, ...]
    names: tuple[str, ...]
    parts: tuple[_Tree | None, ...]  # None: a plain tensor (one leaf)


@dataclass(frozen=True)
class _Bnb4bit:
    """How to rebuild a bitsandbytes `Params4bit` from its packed data and block scales
    (`quant_state.absmax`); the rest of its quant state (codebooks, nested scales: small) is
    kept here, on the compute device."""

    cls: type
    attrs: dict[str, Any]  # blocksize, compress_statistics, quant_type, quant_storage, module
    state: Any  # QuantState, less absmax

    def rebuild(self, leaves: Iterator[torch.Tensor]) -> torch.Tensor:
        data, state = next(leaves), copy.copy(self.state)
        state.absmax = next(leaves)
        return self.cls(data, False, state, bnb_quantized=True, **self.attrs)


@dataclass
class _Weight:
    """One streamed parameter: its plain leaf tensors' masters on the storage device."""

    module: torch.nn.Module
    name: str  # "weight" | "bias"
    tree: _Tree | _Bnb4bit | None  # None: a plain tensor
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
        self._copy = _StreamCopy(compute) if compute.type == "cuda" else _PlainCopy()
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
                value = _rebuild(w.tree, iter(w.masters))
                w.module.__dict__.pop(w.name, None)
                w.module._parameters[w.name] = _parameter(value)
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
            buffer[o : o + _nbytes(m)].view(m.dtype).view(m.shape)
            for o, m in zip(block.offsets, masters, strict=True)
        ]
        self._copy.start(slot, zip(views, masters, strict=True))
        leaves = iter(views)
        for w in block.weights:
            value = _rebuild(w.tree, leaves)
            w.module.__dict__[w.name] = _parameter(value)
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
            tree, leaves = _flatten(param, where, compute)
            masters = [_master(t, storage, pin) for t in leaves]
            placeholder = Evicted(where, param.dtype)
            del module._parameters[name]
            module.__dict__[name] = placeholder
            weights.append(_Weight(module, name, tree, masters, placeholder))
    offsets, end = [], 0
    for m in (m for w in weights for m in w.masters):
        start = -(-end // ALIGN) * ALIGN
        offsets.append(start)
        end = start + _nbytes(m)
    return _Block(index, weights, offsets, end)


def _flatten(
    t: torch.Tensor, where: str, compute: torch.device
) -> tuple[_Tree | _Bnb4bit | None, list[torch.Tensor]]:
    """(how to rebuild `t`, its plain leaf tensors)."""
    if type(t) in (torch.Tensor, torch.nn.Parameter):
        return None, [t.detach()]
    if _is_bnb4bit(t):
        return _bnb4bit(t, compute), [t.data, t.quant_state.absmax]
    if not is_traceable_wrapper_subclass(t):
        raise ConfigError(
            f"block swap cannot stream {where}: a {type(t).__module__}.{type(t).__name__} "
            "keeps tensors outside __tensor_flatten__; use model.quantize=int8|fp8|nf4 "
            "(optimum-quanto, bitsandbytes 4-bit), or trainer.blocks_to_swap=0"
        )
    names, ctx = t.__tensor_flatten__()
    parts, leaves = [], []
    for name in names:
        part, inner = _flatten(getattr(t, name), where, compute)
        parts.append(part)
        leaves += inner
    return _Tree(type(t), ctx, t.size(), t.stride(), tuple(names), tuple(parts)), leaves


def _rebuild(tree: _Tree | _Bnb4bit | None, leaves: Iterator[torch.Tensor]) -> torch.Tensor:
    if tree is None:
        return next(leaves)
    if isinstance(tree, _Bnb4bit):
        return tree.rebuild(leaves)
    inner = {
        name: _rebuild(part, leaves) for name, part in zip(tree.names, tree.parts, strict=True)
    }
    return tree.cls.__tensor_unflatten__(inner, tree.ctx, tree.size, tree.stride)


def _is_bnb4bit(t: torch.Tensor) -> bool:
    cls = type(t)
    return (
        cls.__module__.startswith("bitsandbytes")
        and cls.__name__ == "Params4bit"
        and bool(getattr(t, "bnb_quantized", False))
        and t.quant_state is not None
    )


def _bnb4bit(t: Any, compute: torch.device) -> _Bnb4bit:
    state = copy.copy(t.quant_state)  # codebooks, offset, nested scales: small, resident
    state.absmax, state.code = None, state.code.to(compute)  # absmax streams
    if state.nested:
        state.offset = state.offset.to(compute)
        state.state2 = copy.copy(state.state2)
        state.state2.absmax = state.state2.absmax.to(compute)
        state.state2.code = state.state2.code.to(compute)
    attrs = {
        k: getattr(t, k)
        for k in ("blocksize", "compress_statistics", "quant_type", "quant_storage", "module")
    }
    return _Bnb4bit(type(t), attrs, state)


def _parameter(value: torch.Tensor) -> torch.nn.Parameter:
    """A frozen parameter around `value` (a Params4bit already is one, with its attributes)."""
    if isinstance(value, torch.nn.Parameter):
        return value
    return torch.nn.Parameter(value, requires_grad=False)


def _master(t: torch.Tensor, storage: torch.device, pin: bool) -> torch.Tensor:
    master = t.to(storage).contiguous()
    return master.pin_memory() if pin else master


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class _PlainCopy:
    """Synchronous copies (CPU compute, or any device without streams)."""

    def start(self, slot: int, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        with torch.no_grad():
            for dst, src in pairs:
                dst.copy_(src)

    def wait(self, slot: int) -> None:
        pass

    def sync(self) -> None:
        pass


class _StreamCopy:
    """Copies on a side stream; the compute stream waits for a slot's copy before using it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.done: dict[int, torch.cuda.Event] = {}

    def start(self, slot: int, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        # the slot's previous block was last read by work already queued on the compute stream
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad(), torch.cuda.stream(self.stream):
            for dst, src in pairs:
                dst.copy_(src, non_blocking=True)
        event = torch.cuda.Event()
        event.record(self.stream)
        self.done[slot] = event

    def wait(self, slot: int) -> None:
        if (event := self.done.get(slot)) is not None:
            torch.cuda.current_stream(self.device).wait_event(event)

    def sync(self) -> None:
        self.stream.synchronize()
