"""How a swapped weight travels (trainer/swap.py streams them): the placeholder a weight is while
its block is away, a weight taken apart into the plain tensors that move (a quantised tensor
subclass's inner tensors, bitsandbytes 4-bit's packed data and scales) and rebuilt around their
device copies, and the copies themselves (plain, or on a CUDA side stream)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass
from torch.utils._pytree import tree_leaves

from stagekit.errors import ConfigError

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
class Tree:
    """How to rebuild a tensor subclass from its inner tensors (`__tensor_unflatten__`)."""

    cls: type
    ctx: Any
    size: torch.Size
    stride: tuple[int, ...]
    names: tuple[str, ...]
    parts: tuple[Tree | None, ...]  # None: a plain tensor (one leaf)


@dataclass(frozen=True)
class Bnb4bit:
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


def flatten(
    t: torch.Tensor, where: str, compute: torch.device
) -> tuple[Tree | Bnb4bit | None, list[torch.Tensor]]:
    """(how to rebuild `t`, its plain leaf tensors)."""
    if type(t) in (torch.Tensor, torch.nn.Parameter):
        return None, [t.detach()]
    if is_bnb4bit(t):
        return bnb4bit(t, compute), [t.data, t.quant_state.absmax]
    if not is_traceable_wrapper_subclass(t):
        raise ConfigError(
            f"block swap cannot stream {where}: a {type(t).__module__}.{type(t).__name__} "
            "keeps tensors outside __tensor_flatten__; use model.quantize=int8|fp8|nf4 "
            "(optimum-quanto, bitsandbytes 4-bit), or trainer.blocks_to_swap=0"
        )
    names, ctx = t.__tensor_flatten__()
    parts, leaves = [], []
    for name in names:
        part, inner = flatten(getattr(t, name), where, compute)
        parts.append(part)
        leaves += inner
    return Tree(type(t), ctx, t.size(), t.stride(), tuple(names), tuple(parts)), leaves


def rebuild(tree: Tree | Bnb4bit | None, leaves: Iterator[torch.Tensor]) -> torch.Tensor:
    if tree is None:
        return next(leaves)
    if isinstance(tree, Bnb4bit):
        return tree.rebuild(leaves)
    inner = {name: rebuild(part, leaves) for name, part in zip(tree.names, tree.parts, strict=True)}
    return tree.cls.__tensor_unflatten__(inner, tree.ctx, tree.size, tree.stride)


def is_bnb4bit(t: torch.Tensor) -> bool:
    cls = type(t)
    return (
        cls.__module__.startswith("bitsandbytes")
        and cls.__name__ == "Params4bit"
        and bool(getattr(t, "bnb_quantized", False))
        and t.quant_state is not None
    )


def bnb4bit(t: Any, compute: torch.device) -> Bnb4bit:
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
    return Bnb4bit(type(t), attrs, state)


def parameter(value: torch.Tensor) -> torch.nn.Parameter:
    """A frozen parameter around `value` (a Params4bit already is one, with its attributes)."""
    if isinstance(value, torch.nn.Parameter):
        return value
    return torch.nn.Parameter(value, requires_grad=False)


def master(t: torch.Tensor, storage: torch.device, pin: bool) -> torch.Tensor:
    master = t.to(storage).contiguous()
    return master.pin_memory() if pin else master


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class PlainCopy:
    """Synchronous copies (CPU compute, or any device without streams)."""

    def start(self, slot: int, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        with torch.no_grad():
            for dst, src in pairs:
                dst.copy_(src)

    def wait(self, slot: int) -> None:
        pass

    def sync(self) -> None:
        pass


class StreamCopy:
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
