"""`ltx-lora <argv>` in this process, with the trainer deliberately broken one way (or not).

    python demo_learning_job.py <none|flipped_target|raw_latents|unshifted_timestep> <argv...>

Each breakage is patched into the trainer's own modules only: preprocessing, sampling and the
evaluation keep the pipeline's conventions, as they would around a buggy trainer."""

from __future__ import annotations

import sys
from typing import Any


def flipped_target() -> None:
    """The velocity target negated (x0 - noise instead of noise - x0)."""
    import trainer.objective as objective
    import trainer.strategies as strategies

    noisy = objective.noisy_latents

    def flipped(latents: Any, noise: Any, sigma: Any) -> Any:
        x_t, target = noisy(latents, noise, sigma)
        return x_t, -target

    objective.noisy_latents = strategies.noisy_latents = flipped


def raw_latents() -> None:
    """Training latents cached as the VAE gives them, without the pipeline's normalisation."""
    import trainer.cache as cache
    from ltx.encode import denormalize_video, encode_video

    def raw(vae: Any, frames: Any, generator: Any = None) -> Any:
        return denormalize_video(vae, encode_video(vae, frames, generator))

    cache.encode_video = raw


def unshifted_timestep() -> None:
    """Noise at the shifted sigma, but the transformer told the sigma before the shift (the
    sampler passes the shifted one): a train/inference schedule mismatch."""
    import math

    import trainer.objective as objective
    from ltx.schedule import sequence_shift

    predict = objective.predict_velocity
    draw = objective.draw_sigmas
    state: dict[str, Any] = {}

    def remember(scheduler: Any, batch: Any, cfg: Any, generator: Any) -> Any:
        state["scheduler"] = scheduler
        return draw(scheduler, batch, cfg, generator)

    def unshift(sigma: Any, tokens: int) -> Any:
        k = math.exp(-sequence_shift(state["scheduler"], tokens))  # the shift's inverse
        return k * sigma / (1 + (k - 1) * sigma)

    def mismatched(denoiser: Any, x_v: Any, x_a: Any, text: Any, sv: Any, sa: Any, **kw: Any):
        tokens = objective.video_tokens(x_v)
        return predict(denoiser, x_v, x_a, text, unshift(sv, tokens), sa, **kw)

    objective.draw_sigmas = remember
    objective.predict_velocity = mismatched


BREAKAGES = {"flipped_target": flipped_target, "raw_latents": raw_latents}
BREAKAGES["unshifted_timestep"] = unshifted_timestep

if __name__ == "__main__":
    if sys.argv[1] != "none":
        BREAKAGES[sys.argv[1]]()
    from ltx_lora.cli import main

    sys.exit(main(sys.argv[2:]))
