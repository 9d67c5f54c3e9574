"""What durable atomic writes cost: the same writes with stagekit's fsyncs and without them.

Writes the product makes, through the product's own code: a training checkpoint
(`trainer.checkpoint.save` of the loop's real state: an fp32 adapter of LTX_LORA_BENCH_IO_MB,
default 100, with AdamW's two moments, the EMA copy, LR schedule, RNGs, a loss history); an
export folder as `trainer.outputs.export_run` lays it out (diffusers, EMA and ComfyUI adapter
files of that size, metrics.jsonl, train.json, config.yaml, in one atomic folder); a preprocess
cache's shards, one atomic rename each as trainer.cache writes them (64 of 2 MB, as an LTX-2
clip's latents and text; 256 of 16 KB, as the tiny model's; and those again with one sync of
the folder at the end instead of one per shard). "Without" replaces stagekit's fsync with
nothing; everything else is identical. Same run, interleaved, best of 3; each write starts
after an untimed `sync`, so neither pays for the other's write-back. The ratio is the latency
the caller sees (a write without fsync returns once the bytes are in the page cache).
LTX_LORA_BENCH_DIR measures on another filesystem.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from bench.common import Result
from stagekit import files
from stagekit.files import atomic_dir, atomic_path, write_json, write_jsonl, write_text

SIZE_ENV, DIR_ENV = "LTX_LORA_BENCH_IO_MB", "LTX_LORA_BENCH_DIR"
REPEATS = 3
SHARDS = {"large": (64, 2 << 20), "small": (256, 16 << 10)}  # (count, bytes): LTX-2, tiny model


def run() -> list[Result]:
    """Checkpoint, export and cache shards: fsynced (ours) vs not (baseline)."""
    mb = int(os.environ.get(SIZE_ENV, "100"))
    with tempfile.TemporaryDirectory(prefix="bench-io-", dir=os.environ.get(DIR_ENV)) as tmp:
        root = Path(tmp)
        state, adapter = _training_state(mb)
        each = "atomic write + fsync of its file(s) and folder"
        writes: dict[str, tuple[Callable[[Path], object], str]] = {
            f"checkpoint save {4 * mb} MB": (lambda out: _checkpoint(out, state), each),
            f"export folder {3 * mb} MB": (lambda out: _export(out, adapter, state), each),
            "cache shards 64x2 MB": (lambda out: _shards(out, *SHARDS["large"]), each),
            "cache shards 256x16 KB": (lambda out: _shards(out, *SHARDS["small"]), each),
            "256x16 KB shards, 1 sync": (
                lambda out: _shards(out, *SHARDS["small"], True),
                "durable=False per shard, then one sync_tree of the folder",
            ),
        }
        fs = filesystem(root)
        return [_compare(name, *write, root, fs) for name, write in writes.items()]


def _compare(name: str, write: Callable[[Path], object], how: str, root: Path, fs: str) -> Result:
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(REPEATS):
        for durable in (True, False) if i % 2 == 0 else (False, True):  # alternate who goes first
            out = root / f"{len(times[durable])}-{durable}"
            times[durable].append(_timed(write, out, durable))
            shutil.rmtree(out)
    return Result(
        name=f"fsync: {name}",
        baseline="same write, no fsync",
        baseline_s=min(times[False]),
        ours_s=min(times[True]),
        note=f"{how}; {fs}; best of {REPEATS}",
    )


def _timed(write: Callable[[Path], object], out: Path, durable: bool) -> float:
    out.mkdir(parents=True)
    os.sync()  # nothing dirty from the previous write: each pays only for its own bytes
    with _fsync(durable):
        start = time.perf_counter()
        write(out)
        return time.perf_counter() - start


@contextmanager
def _fsync(on: bool) -> Iterator[None]:
    """stagekit's fsync, or nothing in its place (every durable write goes through it)."""
    real = files.fsync_path
    if not on:
        files.fsync_path = lambda path: None
    try:
        yield
    finally:
        files.fsync_path = real


def _training_state(mb: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The loop's checkpoint state after one AdamW step on an fp32 adapter of `mb` MB (64
    tensors, as a LoRA's many A/B pairs), and the adapter as export writes it."""
    from trainer.config import TrainerConfig
    from trainer.loop import Progress, checkpoint_state, lr_factor

    rows = max(1, (mb << 20) // (64 * 4 * 1024))
    gen = torch.Generator().manual_seed(0)
    params = {
        f"lora_{i}": torch.nn.Parameter(torch.randn(rows, 1024, generator=gen)) for i in range(64)
    }
    optimizer = torch.optim.AdamW(list(params.values()), lr=1e-4)
    for p in params.values():
        p.grad = torch.randn(p.shape, generator=gen)
    optimizer.step()
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(TrainerConfig()))
    ema = {n: p.detach().clone() for n, p in params.items()}
    progress = Progress(step=1000, history=[0.1] * 1000)
    state = checkpoint_state(progress, params, optimizer, schedule, gen, ema)
    return state, {n: p.detach() for n, p in params.items()}


def _checkpoint(out: Path, state: dict[str, Any]) -> None:
    from trainer import checkpoint

    checkpoint.save(out, 1000, state, keep=1)


def _export(out: Path, adapter: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """The folder `export_run` writes, without the model-dependent key conversion and checks."""
    with atomic_dir(out / "train") as tmp:
        (tmp / "adapter").mkdir()
        for name in ("adapter", "adapter_ema", "comfyui"):
            save_file(adapter, tmp / "adapter" / f"{name}.safetensors", {"format": name})
        write_jsonl(tmp / "metrics.jsonl", [{"step": s, "loss": 0.1} for s in range(1000)])
        write_text(tmp / "config.yaml", "trainer:\n  lr: 0.0001\n")
        write_json(tmp / "train.json", {"final": {"loss": 0.1}, "progress": state["progress"]})


def _shards(out: Path, count: int, size: int, batched: bool = False) -> None:
    """`count` shards of `size` bytes, each renamed into place; `batched`: without a sync each,
    and one `sync_tree` at the end (what a caller passing durable=False must do)."""
    block = os.urandom(size)
    for i in range(count):
        with atomic_path(out / f"{i:04d}.safetensors", durable=not batched) as tmp:
            tmp.write_bytes(block)
    if batched:
        files.sync_tree(out)


def filesystem(path: Path) -> str:
    """`ext4 on /dev/vda`: the mount that holds `path` (the longest matching mount point)."""
    best = ("", "unknown", "?")
    for line in Path("/proc/mounts").read_text().splitlines():
        device, point, kind = line.split()[:3]
        if str(path.resolve()).startswith(point) and len(point) > len(best[0]):
            best = (point, kind, device)
    return f"{best[1]} on {best[2]}"
