"""A training state as safetensors + JSON, without pickle: every tensor goes into one flat
safetensors dict, everything else into a JSON tree that points at them.

The state is whatever the loop hands over (trainer.loop.checkpoint_state): adapter weights,
`optimizer.state_dict()` (torch's AdamW: `exp_avg`/`exp_avg_sq`/`step` tensors per parameter
and the param groups' hyperparameters; bitsandbytes' AdamW8bit: its uint8 `state1`/`state2`,
`qmap*`/`absmax*` tensors and int steps), the LR schedule's `state_dict()`, generator and RNG
states (uint8 tensors), the data position and the EMA copy. JSON cannot tell a tuple from a
list nor hold int dict keys (the optimizer's per-parameter state is keyed by index), so those
are tagged; floats round-trip exactly (JSON writes the shortest repr).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

TENSOR, TUPLE, ITEMS = "$tensor", "$tuple", "$items"  # tags; a real key like these is escaped
_TAGS = {TENSOR, TUPLE, ITEMS}


def encode(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON tree, tensors by key). Keys are the tensors' paths in the state
    (`optimizer/state/0/exp_avg`), so the safetensors file reads on its own."""
    tensors: dict[str, torch.Tensor] = {}
    return _encode(state, "", tensors, set()), tensors


def decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The state `encode` took apart. A reference to a missing tensor is a ValueError."""
    if isinstance(tree, list):
        return [decode(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if TENSOR in tree:
        if tree[TENSOR] not in tensors:
            raise ValueError(f"the state names a tensor {tree[TENSOR]!r} the file does not hold")
        return tensors[tree[TENSOR]]
    if TUPLE in tree:
        return tuple(decode(v, tensors) for v in tree[TUPLE])
    if ITEMS in tree:
        return {decode(k, tensors): decode(v, tensors) for k, v in tree[ITEMS]}
    return {k: decode(v, tensors) for k, v in tree.items()}


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor], seen: set[int]) -> Any:
    if isinstance(obj, torch.Tensor):
        return {TENSOR: _add_tensor(obj, path, tensors, seen)}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, tuple | list):
        items = [_encode(v, f"{path}/{i}", tensors, seen) for i, v in enumerate(obj)]
        return {TUPLE: items} if isinstance(obj, tuple) else items
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not _TAGS & set(obj):
            return {k: _encode(v, f"{path}/{k}", tensors, seen) for k, v in obj.items()}
        return {ITEMS: [_encode_item(k, v, path, tensors, seen) for k, v in obj.items()]}
    # fail at save time, naming it, rather than write a checkpoint that cannot come back
    raise TypeError(f"cannot checkpoint {path.lstrip('/') or 'the state'}: {type(obj).__name__}")


def _encode_item(
    key: Any, value: Any, path: str, tensors: dict[str, torch.Tensor], seen: set[int]
) -> list[Any]:
    """A [key, value] pair of a dict JSON cannot hold as an object (int keys, tag-like keys)."""
    if isinstance(key, torch.Tensor):
        raise TypeError(f"cannot checkpoint {path.lstrip('/')}: a tensor as a dict key")
    return [_encode(key, path, tensors, seen), _encode(value, f"{path}/{key}", tensors, seen)]


def _add_tensor(
    t: torch.Tensor, path: str, tensors: dict[str, torch.Tensor], seen: set[int]
) -> str:
    if type(t) is not torch.Tensor and type(t).__name__ == "DTensor":
        # a shard: only the main process writes checkpoints, and gathering one is collective
        raise TypeError(f"cannot checkpoint {path.lstrip('/')}: a sharded DTensor")
    key = path.lstrip("/") or "tensor"
    while key in tensors:
        key += "_"
    t = t.detach()
    storage = t.untyped_storage().data_ptr() if t.numel() else None
    # safetensors refuses tensors that share memory (views of one buffer): copy the later ones
    if storage in seen:
        t = t.clone()
    elif storage is not None:
        seen.add(storage)
    tensors[key] = t.contiguous()
    return key


def rng_state() -> dict[str, Any]:
    """The global generators a step may draw from: torch's CPU one (LoRA dropout on CPU), this
    process's current CUDA device, Python's `random` and numpy's legacy one."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [str(np_name), np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # the current device only: each process drives one GPU, and only the main one writes
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what `rng_state` captured (the CUDA state only where this run has CUDA)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
