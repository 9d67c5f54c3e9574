"""Curation throughput against the decode-only limit, and peak memory for 10 vs 100 clips.

`python -m bench curation`. Default: 6 clips of 4 s 1080p (about a minute and a half on two
cores). `LTX_BENCH_FULL=1`: the issue's 30 clips of 10 s 1080p. Clips are generated in a
temporary folder (moving textures, h264 + AAC), so the bench needs no data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from bench.common import Result

FULL = os.environ.get("LTX_BENCH_FULL") == "1"
CLIPS, SECONDS = (30, 10.0) if FULL else (6, 4.0)
SIZE, FPS = (1920, 1080), 30
# Production-like output: LTX-2 buckets under a 768x512 pixel budget, 49 frames at 24 fps.
CURATION = {"pixel_budget": 768 * 512, "frames": 49, "fps": 24.0}
RSS_COUNTS = (10, 100)


def run() -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="bench-curation-") as tmp:
        root = Path(tmp)
        raw = root / "big" / "raw"
        make_clips(raw, CLIPS, SECONDS, SIZE)
        decode_s = decode_only(sorted(raw.glob("*.mp4")))
        curate_s, summary = timed_curate(raw, root / "big" / "curated", CURATION)
        frames = CLIPS * round(SECONDS * FPS)
        throughput = Result(
            name="curation vs decode-only",
            baseline="sequential PyAV decode",
            baseline_s=decode_s,
            ours_s=curate_s,
            target=0.5,
            note=f"{CLIPS}x{SECONDS:g}s {SIZE[1]}p: {frames / curate_s:.0f} src frames/s curated, "
            f"{frames / decode_s:.0f} decoded; {summary['curated']} clips",
        )
        rss = [peak_rss(root / f"rss{n}", n) for n in RSS_COUNTS]
        memory = Result(
            name="curation peak RSS 10 vs 100 clips",
            baseline="peak RSS MB, 10 clips",
            baseline_s=rss[0]["total"],
            ours_s=rss[1]["total"],
            target=0.8,  # 100 clips may use at most 1.25x the memory of 10
            note=f"MB main+largest worker: 10 clips {rss[0]['main']:.0f}+{rss[0]['worker']:.0f}, "
            f"100 clips {rss[1]['main']:.0f}+{rss[1]['worker']:.0f} (ratio = 10/100)",
        )
    return [throughput, memory]


def make_clips(folder: Path, count: int, seconds: float, size: tuple[int, int]) -> None:
    """`count` h264+AAC clips of moving texture, each from its own seed (no near-duplicates)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_texture_clip(folder / f"clip_{i:03d}.mp4", seconds, size, seed=i)


def write_texture_clip(path: Path, seconds: float, size: tuple[int, int], seed: int) -> None:
    w, h = size
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    base = np.repeat(np.repeat(cells, 16, 0), 16, 1)[:h, :w]
    # Camera-like grain: without it the decoder has almost nothing to do, and the
    # decode-only baseline would be unrealistically fast.
    grain = [rng.integers(-12, 12, (h, w, 1), dtype=np.int16) for _ in range(4)]
    n = round(seconds * FPS)
    tone = (0.2 * np.sin(np.arange(round(seconds * 48000)) * 2 * np.pi * 220 / 48000)).astype(
        np.float32
    )
    with av.open(str(path), "w", format="mp4") as c:
        video = c.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "g": "60"})
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        audio = c.add_stream("aac", rate=48000, layout="mono")
        for k in range(n):
            moved = np.roll(base, 4 * k, axis=1).astype(np.int16) + grain[k % 4]
            frame = av.VideoFrame.from_ndarray(np.clip(moved, 0, 255).astype(np.uint8), "rgb24")
            frame.pts = k
            c.mux(video.encode(frame))
        c.mux(video.encode(None))
        sound = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
        sound.sample_rate, sound.pts = 48000, 0
        c.mux(audio.encode(sound))
        c.mux(audio.encode(None))


def decode_only(paths: list[Path]) -> float:
    """Seconds to decode every video frame of `paths` in one process, one file after another.

    Same decoder settings as curation (frame threads): the limit curation cannot beat alone.
    """
    start = time.perf_counter()
    for path in paths:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in c.decode(stream):
                pass
    return time.perf_counter() - start


def timed_curate(raw: Path, out: Path, overrides: dict) -> tuple[float, dict]:
    """Curate `raw` in a child process (as the CLI would); (seconds, summary)."""
    start = time.perf_counter()
    result = _child(raw, out, overrides)
    return time.perf_counter() - start, result["summary"]


def peak_rss(root: Path, count: int) -> dict[str, float]:
    """Peak RSS (MB) of a curation run over `count` small clips: main process, worst worker."""
    raw = root / "raw"
    make_clips(raw, count, 0.8, (480, 270))
    result = _child(raw, root / "curated", {"pixel_budget": 384 * 256, "frames": 17, "fps": 24.0})
    return {**result["rss"], "total": result["rss"]["main"] + result["rss"]["worker"]}


_CHILD = """
import json, resource, sys, yaml
from pathlib import Path
from curation.card import DatasetCard
from curation.config import CurationConfig
from curation.curate import curate
from ltx.buckets import BucketRules
raw, out, overrides, default = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
tree = {**yaml.safe_load(Path(default).read_text()), "buckets": None, **overrides}
card = DatasetCard(client="b", adapter="b", trigger="b", class_noun="b", owner="b", rights="b")
cfg = CurationConfig.model_validate(tree)
summary = curate(Path(raw), Path(out), card, cfg, BucketRules(32, 8))
rss = {"main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
print(json.dumps({"summary": summary, "rss": rss}))
"""


def _child(raw: Path, out: Path, overrides: dict) -> dict:
    default = Path(__file__).resolve().parents[1] / "configs" / "curation" / "default.yaml"
    env = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(raw), str(out), json.dumps(overrides), str(default)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"curation failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
