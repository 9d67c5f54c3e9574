"""`python -m bench.gpu_transformer [--version 2.0|2.3|2.5] [--steps N] [--no-vae]`: full-size
LTX-2 on one GPU.

Builds the LTX-2.x transformer at its real size (19-22B, 48 layers, random weights, bf16) with a
rank-32 LoRA on the video attention, and times LoRA training steps on one 121-frame 512x768 clip
(6144 video tokens, 126 audio tokens, 1024 text tokens) with gradient checkpointing and AdamW
on the adapter only: seconds per step, peak VRAM and MFU (the step's model FLOPs, counted once on
PyTorch's meta device, over the GPU's dense bf16 peak). Then the version's video VAE encodes the
same clip: seconds per clip and peak VRAM. Each version's configs come from `ltx.versions`; 2.5
passes its keyframe marker as training does. Random weights take the time real ones take; nothing
is downloaded. Without a CUDA GPU it says so and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ltx.specs import LTX_2_0, LTX_2_0_VAE_CONFIG, LTX_2_3, TINY, ModelSpec
from ltx.versions import VERSIONS

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, by a substring of the device name.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
NO_GPU = (
    "bench.gpu_transformer needs a CUDA GPU (about 60 GB free for the 19B transformer in bf16): "
    "none is visible here, so nothing was measured. Run it on a GPU machine: "
    "python -m bench.gpu_transformer"
)


@dataclass(frozen=True)
class Workload:
    """One training sample and the model sizes it runs through."""

    spec: ModelSpec
    transformer: dict[str, Any]  # LTX2VideoTransformer3DModel kwargs (defaults: LTX-2.0 19B)
    vae: dict[str, Any]  # AutoencoderKLLTX2Video kwargs
    frames: int = 121
    height: int = 512
    width: int = 768
    fps: float = 24.0
    batch: int = 1
    rank: int = 32
    targets: str = "video_attention"
    checkpointing: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """[B, C, F', H', W'] video and [B, C_a, L, M'] audio latents, [B, T, D] text."""
        b, s = self.batch, self.spec
        caption = self.transformer.get("caption_channels", 3840)
        video_text, audio_text = caption, caption
        if not self.transformer.get("use_prompt_embeddings", True):  # 2.3+: connector outputs
            t = self.transformer
            video_text = t["num_attention_heads"] * t["attention_head_dim"]
            audio_text = t["audio_num_attention_heads"] * t["audio_attention_head_dim"]
        return {
            "video": (b, *s.video_latent_shape(self.frames, self.height, self.width)),
            "audio": (b, *s.audio_latent_shape(self.frames, self.fps)),
            "text": (b, s.text_tokens, video_text),
            "audio_text": (b, s.text_tokens, audio_text),
            "pixels": (b, 3, self.frames, self.height, self.width),
        }


FULL = Workload(LTX_2_0, {"rope_type": "split"}, dict(LTX_2_0_VAE_CONFIG))


def full(version: str) -> Workload:
    """The full-size workload of LTX-`version` (2.5 shares 2.3's latent and text sizes)."""
    if version == "2.0":
        return FULL
    configs = VERSIONS[version].configs
    return replace(
        FULL, spec=LTX_2_3, transformer=dict(configs["transformer"]), vae=dict(configs["vae"])
    )


def tiny(version: str = "2.0") -> Workload:
    """The same workload on the tiny model of `version` (what the CPU test builds)."""
    from ltx import tiny as t

    return replace(
        FULL,
        spec=TINY,
        transformer=dict(t.transformer_config(version)),
        vae=dict(t.vae_config(version)),
        frames=9,
        height=64,
        width=96,
        rank=4,
    )


def build_transformer(w: Workload, device: str | torch.device, dtype: torch.dtype) -> Any:
    """The transformer with random weights made directly on `device`, with the LoRA."""
    from diffusers import LTX2VideoTransformer3DModel

    from ltx.lora import add_lora

    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in bf16: a float32 19B model would not fit
    try:
        with torch.device(device):
            model = LTX2VideoTransformer3DModel(**w.transformer)
    finally:
        torch.set_default_dtype(default)
    model.requires_grad_(False)
    add_lora(model, w.rank, w.rank, 0.0, w.targets)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # the adapter trains in float32, as trainer/ does
    if w.checkpointing:
        model.enable_gradient_checkpointing()
    return model.train()


def make_inputs(w: Workload, model: Any, device: str | torch.device) -> dict[str, Any]:
    """The transformer's keyword arguments for one noisy sample, as ltx.forward passes them."""
    from diffusers import LTX2Pipeline

    from ltx.keyframes import marker_kwargs
    from ltx.sampling import use_cross_timestep

    cfg, shapes, dtype = model.config, w.shapes(), model.dtype
    g = torch.Generator(device="cpu").manual_seed(0)
    video = torch.randn(shapes["video"], generator=g)
    audio = torch.randn(shapes["audio"], generator=g)
    b, _, frames, height, width = shapes["video"]
    packed_video = LTX2Pipeline._pack_latents(video, cfg.patch_size, cfg.patch_size_t)
    packed_audio = LTX2Pipeline._pack_audio_latents(audio)
    t = torch.full((b,), 700.0, device=device)
    mask = torch.ones(shapes["text"][:2], dtype=torch.int64, device=device)
    # what the connectors hand the transformer: one [B, T, caption_channels] per stream
    text = torch.randn(shapes["text"], generator=g).to(device, dtype)
    audio_text = torch.randn(shapes["audio_text"], generator=g)
    tokens = packed_video.shape[1]
    return {
        **marker_kwargs(model, b, tokens, height, width),  # 2.5: the first frame, as trained
        "use_cross_timestep": use_cross_timestep(model),
        "hidden_states": packed_video.to(device, dtype),
        "audio_hidden_states": packed_audio.to(device, dtype),
        "encoder_hidden_states": text,
        "audio_encoder_hidden_states": audio_text.to(device, dtype),
        "timestep": t,
        "audio_timestep": t,
        "sigma": t,
        "audio_sigma": t,
        "encoder_attention_mask": mask,
        "audio_encoder_attention_mask": mask,
        "num_frames": frames,
        "height": height,
        "width": width,
        "fps": w.fps,
        "audio_num_frames": packed_audio.shape[1],
        "video_coords": model.rope.prepare_video_coords(
            b, frames, height, width, device, fps=w.fps
        ),
        "audio_coords": model.audio_rope.prepare_audio_coords(b, packed_audio.shape[1], device),
        "return_dict": False,
    }


def train_step(model: Any, inputs: dict[str, Any], optimizer: torch.optim.Optimizer) -> float:
    """Forward, velocity MSE on both streams, backward, AdamW on the adapter."""
    video_out, audio_out = model(**inputs)
    loss = video_out.float().pow(2).mean() + audio_out.float().pow(2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def count_flops(w: Workload) -> float:
    """Model FLOPs of one training step (forward + backward, no checkpoint recompute), counted
    by running it on the meta device: exact for the matmuls and attention, no memory used."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_transformer(replace(w, checkpointing=False), "meta", torch.bfloat16)
    inputs = make_inputs(w, model, "meta")
    with FlopCounterMode(display=False) as counter:
        video_out, audio_out = model(**inputs)
        (video_out.float().pow(2).mean() + audio_out.float().pow(2).mean()).backward()
    return float(counter.get_total_flops())


def bench_transformer(w: Workload, steps: int, warmup: int) -> dict[str, float]:
    model = build_transformer(w, "cuda", torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    inputs = make_inputs(w, model, "cuda")
    for _ in range(warmup):
        train_step(model, inputs, optimizer)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, inputs, optimizer)
    torch.cuda.synchronize()
    step_s = (time.perf_counter() - start) / steps
    out = {
        "base_params_B": sum(p.numel() for p in model.parameters() if not p.requires_grad) / 1e9,
        "lora_params_M": sum(p.numel() for p in params) / 1e6,
        "step_s": step_s,
        "peak_vram_GiB": torch.cuda.max_memory_allocated() / 2**30,
    }
    del model, optimizer, inputs
    torch.cuda.empty_cache()
    return out


def bench_vae(w: Workload, repeats: int = 3) -> dict[str, float]:
    """The video VAE encoding the clip in bf16, tiled as preprocessing runs it on big clips."""
    from diffusers import AutoencoderKLLTX2Video

    vae = AutoencoderKLLTX2Video(**w.vae).to("cuda", torch.bfloat16).eval()
    pixels = torch.rand(w.shapes()["pixels"], device="cuda", dtype=torch.bfloat16) * 2 - 1
    times = []
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first call pays cuDNN autotuning
            torch.cuda.synchronize()
            start = time.perf_counter()
            latents = vae.encode(pixels).latent_dist.mode()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    out = {
        "encode_s": min(times[1:]),
        "peak_vram_GiB": torch.cuda.max_memory_allocated() / 2**30,
        "latent_shape": "x".join(map(str, latents.shape)),
    }
    del vae, pixels
    torch.cuda.empty_cache()
    return out


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def format_report(
    device: str, w: Workload, tf: dict[str, float], flops: float, vae: dict | None
) -> str:
    peak = peak_flops(device)
    mfu = f"{100 * flops / tf['step_s'] / peak:.1f}%" if peak else "n/a (unknown peak)"
    shapes = w.shapes()
    lines = [
        f"device: {device}, torch {torch.__version__}",
        f"clip {w.frames}x{w.height}x{w.width} -> video latents {shapes['video']}, "
        f"audio latents {shapes['audio']}, text {shapes['text']}",
        f"transformer {tf['base_params_B']:.2f}B bf16 + LoRA rank {w.rank} "
        f"({tf['lora_params_M']:.0f}M), gradient checkpointing "
        + ("on" if w.checkpointing else "off"),
        f"  step       {tf['step_s']:.3f} s",
        f"  peak VRAM  {tf['peak_vram_GiB']:.1f} GiB",
        f"  MFU        {mfu} ({flops / 1e12:.1f} TFLOP per step, no recompute counted)",
    ]
    if vae:
        lines += [
            f"video VAE encode of the clip (bf16) -> {vae['latent_shape']}",
            f"  encode     {vae['encode_s']:.3f} s",
            f"  peak VRAM  {vae['peak_vram_GiB']:.1f} GiB",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_transformer", description=__doc__)
    parser.add_argument("--version", choices=sorted(VERSIONS), default="2.0", help="LTX version")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 3 warm-up)")
    parser.add_argument("--no-vae", action="store_true", help="skip the VAE encode bench")
    parser.add_argument("--no-checkpointing", action="store_true", help="keep all activations")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    w = replace(full(args.version), checkpointing=not args.no_checkpointing)
    device = torch.cuda.get_device_name(0)
    print(f"building the full-size LTX-{args.version} transformer on {device} ...", file=sys.stderr)
    flops = count_flops(w)
    tf = bench_transformer(w, args.steps, warmup=3)
    vae = None if args.no_vae else bench_vae(w)
    print(format_report(device, w, tf, flops, vae))
    return 0


if __name__ == "__main__":
    sys.exit(main())
