"""Adapter export in two layouts, each verified by loading it into the diffusers LTX-2 pipeline.

- `adapter.safetensors`: diffusers/PEFT keys (`transformer.…lora_A.weight`). diffusers 0.42.1
  rejects `.alpha` keys, so alpha travels in its own `lora_adapter_metadata` header entry, which
  `LTX2Pipeline.load_lora_weights` reads.
- `comfyui.safetensors`: ComfyUI keys (`diffusion_model.…`) with `.alpha` where alpha ≠ rank.
Both carry the DESIGN.md metadata header, and the same bytes for the same weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

from ltx.lora import ALPHA_SUFFIX, adapter_state_dict, diffusers_metadata_header
from ltx.lora_keys import to_comfyui
from stagekit.hashing import sha256_file
from trainer.data import Batch

DIFFUSERS_FILE = "adapter.safetensors"
COMFYUI_FILE = "comfyui.safetensors"


def export_adapter(
    transformer: torch.nn.Module, dest: Path, metadata: dict[str, str], stem: str = "adapter"
) -> list[Path]:
    """Write `<stem>.safetensors` (diffusers) and `<stem>` ComfyUI twin into `dest/`."""
    dest.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu").contiguous() for k, v in adapter_state_dict(transformer).items()
    }
    plain = {k: v for k, v in state.items() if not k.endswith(ALPHA_SUFFIX)}
    # adapter → comfyui, adapter_ema → comfyui_ema
    files = [
        dest / f"{stem}.safetensors",
        dest / f"comfyui{stem.removeprefix('adapter')}.safetensors",
    ]
    save_file(
        plain,
        files[0],
        metadata={**metadata, **_inference_header(transformer), "format": "diffusers"},
    )
    save_file(to_comfyui(state), files[1], metadata={**metadata, "format": "comfyui"})
    for f in files:
        canonical_header(f)
    return files


def _inference_header(transformer: torch.nn.Module) -> dict[str, str]:
    """diffusers' LoRA config header with dropout 0: diffusers injects the layers in training
    mode, so a header dropout would randomly drop activations at inference (seen in 0.42.1)."""
    header = diffusers_metadata_header(transformer)
    ((key, raw),) = header.items()
    config = json.loads(raw)
    config["transformer.lora_dropout"] = 0.0
    return {key: json.dumps(config, indent=2, sort_keys=True)}


def verify_export(
    pipe, trained: torch.nn.Module, files: list[Path], batch: Batch
) -> dict[str, str]:
    """Load each file into the pipeline the way its consumers do and check the denoiser then
    predicts what the in-memory adapter predicts (and not what the base predicts).

    Compared at the velocity output on a real training batch, where float precision shows even
    a few steps of training. Returns {file name: sha256}.
    """
    probe = _probe(pipe, batch)
    base, ours = probe(pipe.transformer), probe(trained)
    if torch.equal(base, ours):
        raise RuntimeError("export check failed: the trained adapter does not change the output")
    for f in files:
        with _loaded(pipe, f):
            got = probe(pipe.transformer)
        if not torch.allclose(got, ours, rtol=1e-4, atol=1e-5):
            err = (got - ours).abs().max().item()
            raise RuntimeError(
                f"export check failed: {f.name} loaded into the pipeline predicts "
                f"differently from the in-memory adapter (max |diff| {err:.3g})"
            )
    return {f.name: sha256_file(f) for f in files}


def _probe(pipe, batch: Batch):
    """Video velocity [B, C, F, H, W] for fixed noise at σ = 0.5, as a function of the
    transformer used."""
    from ltx.forward import noisy_latents, predict_velocity

    g = torch.Generator().manual_seed(0)
    sigma = torch.full((batch.video.shape[0],), 0.5)
    x_v = noisy_latents(batch.video, torch.randn(batch.video.shape, generator=g), sigma)[0]
    x_a = (
        None
        if batch.audio is None
        else noisy_latents(batch.audio, torch.randn(batch.audio.shape, generator=g), sigma)[0]
    )

    @torch.no_grad()
    def run(transformer: torch.nn.Module) -> torch.Tensor:
        denoiser = {"transformer": transformer, "connectors": pipe.connectors}
        return predict_velocity(denoiser, x_v, x_a, batch.text, sigma, sigma, fps=batch.fps)[0]

    return run


@contextmanager
def _loaded(pipe, path: Path) -> Iterator[None]:
    """The diffusers file through plain `load_lora_weights(path)`, as diffusers users load it;
    the ComfyUI file converted as ComfyUI reads it (keys renamed, `.alpha` applied)."""
    from ltx.lora import load_adapter_file

    source = str(path) if path.name.startswith("adapter") else load_adapter_file(path)
    pipe.load_lora_weights(source, adapter_name="export-check")
    try:
        yield
    finally:
        pipe.unload_lora_weights()


def canonical_header(path: Path) -> None:
    """Rewrite a safetensors header with sorted keys, same length: the same weights and
    metadata then give the same bytes (safetensors writes metadata in hash-map order), so
    an adapter's sha256 identifies it."""
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + n]), sort_keys=True, separators=(",", ":"))
    raw = header.encode()
    if len(raw) > n:
        raise RuntimeError(f"{path}: canonical header longer than the original")
    data[8 : 8 + n] = raw + b" " * (n - len(raw))  # keep tensor offsets where they were
    path.write_bytes(bytes(data))
