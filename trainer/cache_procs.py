"""Processes of a preprocess job: one (the null `Group`) or a torchrun job's ranks
(`TorchGroup`), and the lock that keeps a second job off the same cache."""

from __future__ import annotations

import atexit
import fcntl
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from stagekit.errors import UserError

_GLOO_GROUP: dict[str, Any] = {}  # the gloo group for objects, made once per process


class Group:
    """One process (the null object); `TorchGroup` is the same API over torch.distributed."""

    rank, world = 0, 1

    def from_rank0(self, fn: Callable[[], Any]) -> Any:
        """fn() run on rank 0, its result (or its error) given to every rank."""
        return fn()

    def all_ok(self, fn: Callable[[], Any]) -> None:
        """Run fn() on every rank; if any rank fails, every rank raises (none hangs)."""
        fn()


class TorchGroup(Group):
    """Ranks of a torchrun job. Objects travel over gloo, whatever backend training uses."""

    def __init__(self, pg: Any) -> None:
        import torch.distributed as dist

        self.dist, self.pg = dist, pg
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def from_rank0(self, fn: Callable[[], Any]) -> Any:
        box: list[Any] = [_attempt(fn) if self.rank == 0 else None]
        self.dist.broadcast_object_list(box, src=0, group=self.pg)
        return _unwrap(box[0], "rank 0")

    def all_ok(self, fn: Callable[[], Any]) -> None:
        mine = _attempt(fn)
        results: list[Any] = [None] * self.world
        self.dist.all_gather_object(results, mine, group=self.pg)
        _unwrap(mine, f"rank {self.rank}")  # this rank's own error first, with its traceback
        for rank, result in enumerate(results):
            _unwrap(result, f"rank {rank}")


def _attempt(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", fn())
    except UserError as e:
        return ("user", str(e))
    except Exception as e:
        return ("error", f"{type(e).__name__}: {e}")


def _unwrap(result: tuple[str, Any], who: str) -> Any:
    kind, value = result
    if kind == "ok":
        return value
    if kind == "user":
        raise UserError(value if who == "rank 0" else f"{who}: {value}")
    raise RuntimeError(f"preprocess failed on {who}: {value}")


def process_group() -> Group:
    """The torchrun job this process belongs to (WORLD_SIZE > 1), else a single process.
    Initialised once and kept for the process's life: a second init after a destroy reuses
    the launcher's store and can hang (seen with two preprocess calls in one job); training
    (Accelerate) then finds the group ready, with NCCL for CUDA tensors on GPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Group()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        # Planning hashes every clip on rank 0: give it time before the others time out.
        dist.init_process_group(backend=backend, timeout=timedelta(hours=2))
        atexit.register(_destroy_process_group)
    if "pg" not in _GLOO_GROUP:
        plain = dist.get_backend() == "gloo"
        _GLOO_GROUP["pg"] = None if plain else dist.new_group(backend="gloo")
    return TorchGroup(_GLOO_GROUP["pg"])


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


class CacheLock:
    """One preprocess job per cache: a second one fails at once instead of mixing shards.
    The lock file sits beside the folder, so the folder holds only the cache (a DVC output)."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir, self.file = cache_dir, None

    def acquire(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.cache_dir.parent / f".{self.cache_dir.name}.lock"
        self.file = open(path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise UserError(
                f"another `ltx-lora preprocess` is writing {self.cache_dir} (lock {path}); "
                "wait for it to finish"
            ) from None

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing drops the flock
            self.file = None


def pick_device(device: str | None) -> str:
    """'cuda:<LOCAL_RANK>' when a GPU is there, else 'cpu', unless given."""
    if device:
        return device
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"
