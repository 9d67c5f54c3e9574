"""Preprocessing in real processes: 2 ranks under torchrun (gloo on CPU) write what one process
writes, and a 2-rank job killed with SIGKILL mid-way resumes, losing at most the shards in
flight.

One torchrun job does both (process start-up is most of the cost on 2 busy cores): it builds
cache A to the end, then starts cache B, and the test kills the whole job during B.
Run as a script, this file is that job: `python test_preprocess_processes.py MODEL
MANIFEST_A CACHE_A [MANIFEST_B CACHE_B ...]`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stagekit.errors import UserError
from stagekit.files import read_jsonl, write_jsonl
from tests.integration import test_cache as shared
from tests.integration.test_cache import build, index_of, leftovers, same_tensors, shard_tensors
from trainer.cache import INDEX, JOURNAL_PREFIX, CacheLock

# The session fixtures of test_cache: one tiny model, one dataset, one reference cache.
tiny_model, dataset, reference_cache = shared.tiny_model, shared.dataset, shared.reference_cache

ROOT = Path(__file__).resolve().parents[2]
COPIES = 5  # manifest rows per clip for cache B: enough shards to kill the job in the middle
KILL_AFTER = 3  # journalled shards (both ranks together) before the kill


def many_rows(dataset: Path, out: Path) -> Path:
    """Each clip listed COPIES times under new ids (same file, same caption)."""
    out.mkdir()
    rows = read_jsonl(dataset)
    copies = [{**r, "id": f"{r['id']}-{k}"} for k in range(COPIES) for r in rows]
    (out / "curated").symlink_to(dataset.parent / "curated")
    write_jsonl(out / "manifest.jsonl", copies)
    return out / "manifest.jsonl"


def children(pid: int) -> list[int]:
    """Child process ids (torchrun starts its workers in sessions of their own, so killing its
    process group would leave them running)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wait_unlocked(cache: Path, timeout: float = 60) -> None:
    """Until the killed ranks' cache lock is free: a SIGKILLed process closes its files only
    once all its threads have exited, which under load takes a moment after the kill."""
    deadline = time.monotonic() + timeout
    lock = CacheLock(cache)
    while True:
        try:
            lock.acquire()
            lock.release()
            return
        except UserError:
            assert time.monotonic() < deadline, "the killed job still holds the cache lock"
            time.sleep(0.05)


def journal_lines(cache: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in cache.glob(f"{JOURNAL_PREFIX}*.jsonl"))


@pytest.fixture(scope="module")
def job(dataset: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the torchrun job; SIGKILL its process group once cache B has KILL_AFTER shards."""
    root = tmp_path_factory.mktemp("job")
    manifest_b = many_rows(dataset, root / "b")
    cache_a, cache_b, log = root / "a" / "cache", root / "b" / "cache", root / "stderr.txt"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = [tiny_model, dataset, cache_a, manifest_b, cache_b]
    cmd = [*torchrun, __file__, *map(str, args)]
    # One thread per worker: the tiny model is 5-10x slower with 2 threads on busy cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    deadline = time.monotonic() + 180
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, stderr=err)
        try:
            while journal_lines(cache_b) < KILL_AFTER and proc.poll() is None:
                time.sleep(0.005)
                assert time.monotonic() < deadline, f"job stuck:\n{log.read_text()[-4000:]}"
        finally:  # also on failure: never leave the job running
            for pid in [*children(proc.pid), proc.pid]:  # both ranks, then torchrun
                with contextlib.suppress(ProcessLookupError):  # already gone
                    os.kill(pid, signal.SIGKILL)
            proc.wait()
            wait_unlocked(cache_b)
    return {"a": cache_a, "b": cache_b, "manifest_b": manifest_b, "stderr": log.read_text(),
            "returncode": proc.returncode, "journalled": journal_lines(cache_b)}  # fmt: skip


def test_two_ranks_write_byte_identical_shards_and_index(job: dict, reference_cache) -> None:
    cache, ref = job["a"], reference_cache[0]
    assert index_of(cache) == index_of(ref) and leftovers(cache) == []
    for entry in index_of(ref)["entries"].values():
        assert (cache / entry["file"]).read_bytes() == (ref / entry["file"]).read_bytes()
    # rank 0's bar (3 of the 5 clips) with the time left and clips/s
    assert re.search(r"rank 0/2: 100%.* 3/3 \[[0-9:]+<00:00,\s+[0-9.]+clip/s\]", job["stderr"])


def test_killed_job_resumes_losing_at_most_the_shards_in_flight(
    job: dict, reference_cache, tiny_model: Path
) -> None:
    cache, manifest = job["b"], job["manifest_b"]
    total, done = len(read_jsonl(manifest)), job["journalled"]
    assert job["returncode"] == -signal.SIGKILL and KILL_AFTER <= done < total, "killed too late"
    assert not (cache / INDEX).exists()

    summary = build(manifest, cache, tiny_model)  # one process resumes what two ranks began
    assert summary["encoded"] == total - done and summary["reused"] == done
    assert summary["entries"] == total and leftovers(cache) == []
    for row in read_jsonl(manifest):
        original = row["id"].rsplit("-", 1)[0]
        tensors = shard_tensors(cache, row["id"])
        assert same_tensors(tensors, shard_tensors(reference_cache[0], original))


def main(model: str, *pairs: str) -> None:
    """The preprocess job: one process, or one rank of a torchrun job."""
    import faulthandler

    import torch

    faulthandler.dump_traceback_later(150, exit=True)  # a hang shows where (the test's log)

    from tests.integration.test_cache import TINY
    from trainer.cache import build_cache
    from trainer.config import PreprocessConfig

    torch.set_num_threads(1)
    for manifest, cache in zip(pairs[::2], pairs[1::2], strict=True):
        curated = Path(manifest).parent / "curated"
        build_cache(Path(manifest), curated, Path(cache), Path(model), TINY, PreprocessConfig())


if __name__ == "__main__":
    main(*sys.argv[1:])
else:
    pytestmark = pytest.mark.timeout(300)
