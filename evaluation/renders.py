"""Renders cached by a hash of everything that determines them, so a rerun is nearly free."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evaluation.conditioning import Conditioning
from stagekit.hashing import sha256_json

RENDER_VERSION = 1  # bump when the way a clip is rendered changes


@dataclass(frozen=True)
class RenderJob:
    """One clip to render: base model (adapter None) or base + adapter, one prompt, one seed,
    and in a conditioned mode what it is conditioned on (the same for every side)."""

    prompt: str
    seed: int
    adapter: Path | None
    key: str
    condition: Conditioning | None = None


def render_key(
    model_hash: str,
    adapter_sha: str | None,
    prompt: str,
    seed: int,
    settings: dict[str, Any],
    condition: Conditioning | None = None,
) -> str:
    """The cache key: model weights, adapter bytes, prompt, seed, every render setting and the
    conditioning's pixels (text-to-video keys are those made before conditioning existed)."""
    key = {
        "v": RENDER_VERSION,
        "model": model_hash,
        "adapter": adapter_sha,
        "prompt": prompt,
        "seed": seed,
        "render": settings,
    }
    if condition is not None:
        key["condition"] = condition.key()
    return sha256_json(key)


def cached_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / "renders" / f"{key[:32]}.mp4"


def ensure_renders(
    jobs: list[RenderJob],
    cache_dir: Path,
    load_pipe: Callable[[], Any],
    settings: dict[str, Any],
) -> dict[str, Path]:
    """key → mp4 for every job; renders only the missing ones (the pipeline loads only then)."""
    from ltx.sampling import generate, write_clip

    missing = [j for j in jobs if not cached_path(cache_dir, j.key).is_file()]
    if missing:
        pipe = load_pipe()
        # one generate() call per (adapter, prompt): the adapter is loaded once for its seeds
        # (a prompt's conditioning is the same for all of them)
        groups: dict[tuple[Path | None, str], list[RenderJob]] = {}
        for job in missing:
            groups.setdefault((job.adapter, job.prompt), []).append(job)
        with tqdm(total=len(missing), desc="evaluate: rendering", unit="clip") as bar:
            for (adapter, prompt), group in groups.items():
                cond = group[0].condition
                extra = cond.generate_kwargs() if cond is not None else {}
                seeds = [j.seed for j in group]
                clips = generate(pipe, [prompt], seeds, adapter=adapter, **settings, **extra)
                for job, clip in zip(group, clips, strict=True):
                    write_clip(cached_path(cache_dir, job.key), clip)
                bar.update(len(group))
    return {j.key: cached_path(cache_dir, j.key) for j in jobs}
