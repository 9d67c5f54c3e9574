"""The inference schedule's sigma shift, reused by training so the two cannot disagree."""

from __future__ import annotations

import math

import torch
from diffusers import FlowMatchEulerDiscreteScheduler


def sequence_shift(scheduler: FlowMatchEulerDiscreteScheduler, seq_len: int) -> float:
    """`mu` for a video of `seq_len` latent tokens, as LTX2Pipeline computes it."""
    c = scheduler.config
    base_len, max_len = c.get("base_image_seq_len", 1024), c.get("max_image_seq_len", 4096)
    base_shift, max_shift = c.get("base_shift", 0.95), c.get("max_shift", 2.05)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return seq_len * slope + (base_shift - slope * base_len)


def shift_sigmas(
    scheduler: FlowMatchEulerDiscreteScheduler, sigmas: torch.Tensor, seq_len: int
) -> torch.Tensor:
    """Apply the scheduler's resolution-dependent shift to sigmas in (0, 1)."""
    c = scheduler.config
    if c.get("use_dynamic_shifting", False):
        mu = sequence_shift(scheduler, seq_len)
        if c.get("time_shift_type", "exponential") == "linear":
            return mu / (mu + (1 / sigmas - 1))
        return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
    shift = c.get("shift", 1.0)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def sample_training_sigmas(
    scheduler: FlowMatchEulerDiscreteScheduler,
    n: int,
    seq_len: int,
    *,
    mean: float,
    std: float,
    uniform_fraction: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Shifted logit-normal sigmas [n], a `uniform_fraction` share drawn uniformly instead.

    The uniform share keeps the rarely-sampled ends of the schedule trained.
    """
    normal = torch.randn(n, generator=generator) * std + mean
    shifted = shift_sigmas(scheduler, torch.sigmoid(normal), seq_len)
    uniform = torch.rand(n, generator=generator)
    use_uniform = torch.rand(n, generator=generator) < uniform_fraction
    return torch.where(use_uniform, uniform, shifted).clamp(1e-4, 1.0)
