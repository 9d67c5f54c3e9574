"""Pretrain the demo base model: `python -m demo.recipe --out demo/weights`.

1. The video VAE learns to reconstruct procedural clips (`demo.data`); its latent space is
   then scaled x4 (exactly: raw latents far from unit scale, like a real VAE's), and its latent
   statistics become the pipeline's `latents_mean` / `latents_std`, so normalised latents have
   unit variance, as flow matching assumes.
2. The transformer and text connectors learn the prior by flow matching exactly as the
   trainer does it: `ltx.schedule.sample_training_sigmas` (the sampler's sigma shift),
   `ltx.forward.noisy_latents` and `predict_velocity`, latents from `ltx.encode.encode_video`'s
   normalisation. The text encoder stays frozen.
Writes `demo.safetensors` and `demo.json` (time, VAE PSNR, losses, the weights' sha256).
Seeded: one seed, one machine, one torch version -> the same bytes.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from demo import data as demo_data
from demo import model as demo
from stagekit.files import atomic_path, write_json

CAPTION_DROPOUT = 0.1  # empty prompts, so classifier-free guidance has an unconditional model
FPS = 24.0
FOREGROUND_WEIGHT = 10.0  # VAE loss weight of shape pixels over background ones
LATENT_PENALTY = 1e-4  # keeps the VAE's latents bounded (the KL term's job, without noise)
# The penalty leaves raw latents near unit scale, which would hide a trainer that forgets to
# normalise them. Real VAEs' raw latents are not (Stable Diffusion's std is ~5.5, hence its
# 0.18215), so the latent space is scaled up, exactly (a power of two), before its statistics
# are recorded.
LATENT_SCALE = 4.0


def to_pixels(clips: np.ndarray) -> torch.Tensor:
    """uint8 [B, F, H, W, 3] -> float [B, 3, F, H, W] in [-1, 1] (what the VAE takes)."""
    return torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two [-1, 1] tensors, on the 0..255 scale."""
    mse = F.mse_loss((a.clamp(-1, 1) + 1) * 127.5, (b.clamp(-1, 1) + 1) * 127.5).item()
    return 10 * math.log10(255.0**2 / max(mse, 1e-10))


def warmup_cosine(opt: torch.optim.Optimizer, steps: int) -> Any:
    """Linear warmup over 5 % of the steps, then cosine to 0."""
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ------------------------------------------------------------------------------------ 1. VAE


def train_vae(vae: Any, steps: int, batch: int, rng: np.random.Generator) -> dict[str, float]:
    """Reconstruction (L1 + MSE, shapes weighted up) of the posterior mean; returns figures."""
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    sched = warmup_cosine(opt, steps)
    losses = []
    for _ in tqdm(range(steps), desc="vae", mininterval=5):
        _, clips = demo_data.sample_batch(rng, batch)
        x = to_pixels(clips)
        # The posterior mean, as `ltx.encode.encode_video` takes it: sampling the untrained
        # posterior (std ~1) blurs every reconstruction for hundreds of steps.
        z = vae.encode(x).latent_dist.mode()
        recon = vae.decode(z).sample
        loss = reconstruction_loss(recon, x, clips) + LATENT_PENALTY * z.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    vae.eval()
    return {"vae_final_loss": float(np.mean(losses[-20:]))}


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, clips: np.ndarray) -> torch.Tensor:
    """L1 + MSE, the shape's pixels weighted up: they are ~5 % of a frame, and a plain mean
    lets the VAE settle on drawing the background alone (measured: shapes vanish)."""
    from demo.check import foreground

    mask = torch.from_numpy(np.stack([foreground(c) for c in clips]))  # [B, F, H, W]
    weight = (1.0 + FOREGROUND_WEIGHT * mask.float())[:, None]  # [B, 1, F, H, W]
    err = (recon - x).abs() + (recon - x) ** 2
    return (weight * err).sum() / (weight.sum() * x.shape[1])


@torch.no_grad()
def rescale_latent_space(vae: Any, factor: float = LATENT_SCALE) -> None:
    """Make the VAE's raw latents `factor` times larger, exactly: the encoder's mean outputs x
    factor (its shared log-variance + 2 ln factor), the decoder's first convolution / factor.
    Reconstructions do not change; `calibrate_vae` then records the larger statistics."""
    c = vae.config.latent_channels
    out = vae.encoder.conv_out.conv  # channels: c means, then one log-variance shared by all
    out.weight[:c] *= factor
    out.bias[:c] *= factor
    out.bias[c] += 2.0 * math.log(factor)
    vae.decoder.conv_in.conv.weight /= factor  # linear in its input: padding scales with it


@torch.no_grad()
def calibrate_vae(vae: Any, rng: np.random.Generator, n: int = 64) -> dict[str, float]:
    """Set latents_mean/std to the per-channel statistics of encoded clips; held-out PSNR."""
    _, clips = demo_data.sample_batch(rng, n)
    x = to_pixels(clips)
    z = torch.cat([vae.encode(x[i : i + 8]).latent_dist.mode() for i in range(0, n, 8)])
    vae.latents_mean.copy_(z.mean(dim=(0, 2, 3, 4)))
    vae.latents_std.copy_(z.std(dim=(0, 2, 3, 4)))
    recon = torch.cat([vae.decode(z[i : i + 8]).sample for i in range(0, n, 8)])
    return {"vae_psnr_db": psnr(recon, x)}


# ---------------------------------------------------------------------------- 2. transformer


@torch.no_grad()
def encode_pool(vae: Any, rng: np.random.Generator, n: int) -> tuple[list[str], torch.Tensor]:
    """n random clips of the prior -> (captions, normalised latents [n, C, F', H', W'])."""
    from diffusers import LTX2Pipeline

    scenes, latents = [], []
    for _ in tqdm(range(0, n, 16), desc="encode", mininterval=5):
        picked, clips = demo_data.sample_batch(rng, 16)
        z = vae.encode(to_pixels(clips)).latent_dist.mode()
        z = LTX2Pipeline._normalize_latents(
            z, vae.latents_mean, vae.latents_std, vae.config.scaling_factor
        )
        scenes += [s.prompt for s in picked]
        latents.append(z)
    return scenes[:n], torch.cat(latents)[:n]


@torch.no_grad()
def gemma_states(components: dict[str, Any], prompts: list[str]) -> dict[str, torch.Tensor]:
    """Frozen text encoder output per distinct prompt: {prompt: (stacked states, mask)}."""
    from ltx.encode import gemma_prompt_embeds

    out = {}
    for i in range(0, len(prompts), 64):
        chunk = prompts[i : i + 64]
        embeds, mask = gemma_prompt_embeds(components, chunk, demo.TEXT_MAX_TOKENS)
        for j, p in enumerate(chunk):
            out[p] = (embeds[j], mask[j])
    return out


def silence_audio_to_video(transformer: Any) -> None:
    """Zero the audio->video attention output: the untrained audio stream cannot disturb the
    video at inference (training isolates the modalities; the pipeline does not)."""
    with torch.no_grad():
        for block in transformer.transformer_blocks:
            block.audio_to_video_attn.to_out[0].weight.zero_()
            block.audio_to_video_attn.to_out[0].bias.zero_()


def train_transformer(
    components: dict[str, Any],
    captions: list[str],
    latents: torch.Tensor,
    steps: int,
    batch: int,
    seed: int,
) -> dict[str, float]:
    """Flow matching on the pool with the trainer's sigma distribution; returns figures."""
    from ltx.encode import project_text
    from ltx.forward import noisy_latents, predict_velocity
    from ltx.schedule import sample_training_sigmas

    transformer, connectors = components["transformer"], components["connectors"]
    silence_audio_to_video(transformer)
    states = gemma_states(components, [*sorted(set(captions)), ""])
    params = [p for m in (transformer, connectors) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    sched = warmup_cosine(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    seq = int(latents[0, 0].numel())  # F' x H' x W' tokens: what the sigma shift depends on
    transformer.train()
    connectors.train()
    losses = []
    for _ in tqdm(range(steps), desc="transformer", mininterval=5):
        idx = torch.randint(0, len(captions), (batch,), generator=gen)
        drop = torch.rand(batch, generator=gen) < CAPTION_DROPOUT
        prompts = [
            "" if d else captions[i] for i, d in zip(idx.tolist(), drop.tolist(), strict=True)
        ]
        embeds = torch.stack([states[p][0] for p in prompts])
        mask = torch.stack([states[p][1] for p in prompts])
        text = project_text(connectors, embeds, mask)
        x0 = latents[idx]
        sigma = sample_training_sigmas(
            components["scheduler"],
            batch,
            seq,
            mean=0.0,
            std=1.0,
            uniform_fraction=0.1,
            generator=gen,
        )
        noise = torch.randn(x0.shape, generator=gen)
        x_t, target = noisy_latents(x0, noise, sigma)
        pred, _ = predict_velocity(
            {"transformer": transformer, "connectors": connectors},
            x_t,
            None,
            text,
            sigma,
            sigma,
            fps=FPS,
        )
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    transformer.eval()
    connectors.eval()
    return {
        "transformer_first_loss": float(np.mean(losses[:20])),
        "transformer_final_loss": float(np.mean(losses[-50:])),
    }


# ---------------------------------------------------------------------------------- recipe


def run_recipe(
    out: Path,
    *,
    seed: int = 0,
    vae_steps: int = 1200,
    vae_batch: int = 4,
    pool: int = 2048,
    steps: int = 3000,
    batch: int = 16,
) -> dict[str, Any]:
    """Train everything, write `out/demo.safetensors` + `out/demo.json`; returns the figures."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    components = demo.build_components(seed)
    figures: dict[str, Any] = {"seed": seed, "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    figures |= train_vae(components["vae"], vae_steps, vae_batch, rng)
    rescale_latent_space(components["vae"])
    figures |= calibrate_vae(components["vae"], np.random.default_rng([seed, 1]))
    figures["vae_s"] = round(time.perf_counter() - t0, 1)
    t1 = time.perf_counter()
    captions, latents = encode_pool(components["vae"], rng, pool)
    figures |= train_transformer(components, captions, latents, steps, batch, seed)
    figures["transformer_s"] = round(time.perf_counter() - t1, 1)
    figures["total_s"] = round(time.perf_counter() - t0, 1)
    figures |= {
        "vae_steps": vae_steps,
        "vae_batch": vae_batch,
        "pool": pool,
        "steps": steps,
        "batch": batch,
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    out.mkdir(parents=True, exist_ok=True)
    weights = out / demo.WEIGHTS_FILE.name
    with atomic_path(weights) as tmp:
        save_file(demo.state_dict(components), str(tmp))
    figures["sha256"] = demo.file_sha256(weights)
    write_json(out / demo.RECORD_FILE.name, figures)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the weights + JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--pool", type=int, default=2048, help="clips encoded for step 2")
    parser.add_argument("--steps", type=int, default=3000, help="transformer steps")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    # One thread: these matrices are so small that thread hand-offs cost more than the
    # arithmetic (a VAE step: 0.25 s on one thread, 1.1 s on two busy cores).
    torch.set_num_threads(1)
    figures = run_recipe(
        args.out,
        seed=args.seed,
        vae_steps=args.vae_steps,
        pool=args.pool,
        steps=args.steps,
        batch=args.batch,
    )
    for key, value in figures.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
