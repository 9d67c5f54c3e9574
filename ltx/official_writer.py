"""Write a model in Lightricks' official layouts (what `model.source=official` reads): the
single checkpoint of 2.0 / 2.3, or 2.5's folder of per-component files with the Gemma 4 text
encoder, its projection and its tokenizer in one file. The tests build tiny models this way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ltx.gemma4 import PROJECTION_PREFIX
from ltx.single_file import SINGLE_FILE_COMPONENTS
from ltx.versions import get_version


def save_official(components: dict[str, Any], dest: Path, version: str) -> Path:
    """Write diffusers components in `version`'s official layout under `dest` (what Lightricks
    publishes; tests build tiny models this way): the checkpoint file (2.0, 2.3) or the folder
    of per-component files (2.5) that `model.path` then names."""
    from safetensors.torch import save_file

    from ltx.single_file import to_official

    v = get_version(version)
    sd = {k: t.contiguous() for k, t in to_official(_pick(components)).items()}
    meta = {"model_version": v.name}
    dest.mkdir(parents=True, exist_ok=True)
    if v.layout == "single_file":
        save_file(sd, dest / f"ltx-{v.name}-tiny-dev.safetensors", metadata=meta)
        return dest / f"ltx-{v.name}-tiny-dev.safetensors"
    gemma = {"gemma_version": "gemma4-tiny-ltx-v1"}
    parts = {
        "diffusion_models/ltx-2.5-tiny-dev-transformer.safetensors": (
            lambda k: k.startswith("model.diffusion_model."),
            {**meta, "gemma_source_checkpoint": json.dumps(gemma)},
        ),
        "vae/ltx-2.5-video-vae-conv-tiny.safetensors": (lambda k: k.startswith("vae."), meta),
        "vae/ltx-2.5-audio-vae-tiny.safetensors": (
            lambda k: k.startswith(("audio_vae.", "vocoder.")),
            meta,
        ),
    }
    for rel, (keep, metadata) in parts.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        part = {_bare_vae(k): t for k, t in sd.items() if keep(k)}
        save_file(part, dest / rel, metadata=metadata)
    projections = {k: t for k, t in sd.items() if k.startswith(PROJECTION_PREFIX)}
    _save_gemma4(components, projections, gemma, dest / "text_encoders")
    return dest


def _pick(components: dict[str, Any]) -> dict[str, Any]:
    return {name: components[name] for name in SINGLE_FILE_COMPONENTS}


def _bare_vae(key: str) -> str:
    """Standalone 2.5 VAE files name their keys without the `vae.` prefix (ComfyUI split)."""
    return key.removeprefix("vae.")


def _save_gemma4(
    components: dict[str, Any], projections: dict[str, Any], gemma: dict, folder: Path
) -> None:
    """The text-encoder file: Gemma weights (tied head once), the LTX projections, the
    tokenizer as `tokenizer_json` / `hf_asset__<file>` uint8 tensors, `gemma_config`."""
    import tempfile

    import torch
    from safetensors.torch import save_file

    model = components["text_encoder"]
    sd: dict[str, Any] = {}
    seen: set[int] = set()
    for key, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            sd[key] = tensor.contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        components["tokenizer"].save_pretrained(tmp)
        for p in Path(tmp).iterdir():
            name = "tokenizer_json" if p.name == "tokenizer.json" else f"hf_asset__{p.name}"
            sd[name] = torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8)
    config = {**model.config.to_dict(), **gemma}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {**sd, **projections},
        folder / "gemma4-tiny-with-proj-ltx-2.5.safetensors",
        metadata={"gemma_config": json.dumps(config)},
    )
