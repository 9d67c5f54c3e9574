"""The demo base model: a small LTX-2 (the real diffusers classes) that has really been trained.

`model=tiny` is random, so every score on it is noise. The demo model has the same components
at a slightly larger size, pretrained by `python -m demo.recipe` on procedural clips of
coloured shapes (`demo.data`): video VAE first, then the transformer and text connectors.
Its weights ship in the package (`demo/weights/`, a few MB) with a recorded sha256; the
model folder is built from them once into the workspace's `.models/` and never retrained.

Trained: video VAE, transformer, connectors. Seeded random (but committed, so loading never
depends on an RNG): the tiny Gemma-3 text encoder (its hidden states still tell the prompt's
words apart: each word is one token of its own), the audio VAE and the vocoder (the audio path
is the tiny model's: training it is not needed for what the demo shows).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from demo import data as demo_data
from ltx import tiny, tiny_build
from ltx.bases import PackagedBase
from ltx.specs import ModelSpec
from stagekit.errors import UserError

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_FILE = WEIGHTS_DIR / "demo.safetensors"
RECORD_FILE = WEIGHTS_DIR / "demo.json"  # recipe figures and the weights' sha256
TRAINED = ("vae", "transformer", "connectors")
STORED = ("text_encoder", "connectors", "transformer", "vae", "audio_vae", "vocoder")

TEXT_MAX_TOKENS = 32  # prompts are ~10 words; fewer padded tokens make every step cheaper
REGISTERS = 8  # connectors' learnable registers: must divide TEXT_MAX_TOKENS
LATENT_CHANNELS = 16
# x16 space (patch 8, one x2 block), x2 time: 64x64x17 -> 16x9x4x4 latents = 144 tokens, a
# quarter of the tiny model's 576. (LTX2Pipeline assumes transformer patch 1, so the VAE
# compresses instead.)
SPATIAL = 16

CONNECTORS_CONFIG: dict[str, Any] = {
    **tiny.CONNECTORS_CONFIG,
    "video_connector_num_learnable_registers": REGISTERS,
    "audio_connector_num_learnable_registers": REGISTERS,
    "connector_rope_base_seq_len": TEXT_MAX_TOKENS,
}
TRANSFORMER_CONFIG: dict[str, Any] = {
    **tiny.TRANSFORMER_CONFIG,
    "in_channels": LATENT_CHANNELS,  # x patch^3, with patch 1
    "out_channels": LATENT_CHANNELS,
    "vae_scale_factors": (2, SPATIAL, SPATIAL),
    "num_attention_heads": 4,
    "attention_head_dim": 16,
    "cross_attention_dim": 64,  # = video inner dim
    "num_layers": 4,
}
VAE_CONFIG: dict[str, Any] = {
    **tiny.VAE_CONFIG,
    "latent_channels": LATENT_CHANNELS,
    "block_out_channels": (32,),
    "decoder_block_out_channels": (32,),
    "patch_size": SPATIAL // 2,
    "spatial_compression_ratio": SPATIAL,
}
FORMAT_VERSION = 1


def demo_spec() -> dict[str, Any]:
    """Every setting that shapes the demo model (its folder name hashes this and the weights)."""
    spec = tiny.tiny_spec()
    spec.pop("cross_attn_gain")  # a random-init trick of the tiny model; the demo is trained
    spec["format"] = FORMAT_VERSION
    spec["tokenizer"] = {"words": demo_data.WORDS, "max_tokens": TEXT_MAX_TOKENS}
    spec["connectors"] = CONNECTORS_CONFIG
    spec["transformer"] = _jsonable(TRANSFORMER_CONFIG)
    spec["vae"] = _jsonable(VAE_CONFIG)
    return spec


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def build_tokenizer() -> Any:
    """The tiny in-memory GemmaTokenizer with every prior word as a single token."""
    return tiny_build.build_tokenizer(words=demo_data.WORDS, max_tokens=TEXT_MAX_TOKENS)


def _text_encoder() -> Any:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    vocab = len(tiny.vocab_and_merges(demo_data.WORDS)[0])
    text = {**tiny.TEXT_CONFIG, "vocab_size": (vocab + 63) // 64 * 64}
    config = Gemma3Config(text_config=text, vision_config=tiny.VISION_CONFIG, mm_tokens_per_image=4)
    return Gemma3ForConditionalGeneration(config).eval()


def build_components(seed: int = 0) -> dict[str, Any]:
    """Every `LTX2Pipeline` component at its initial (untrained, seeded) weights."""
    from diffusers import LTX2VideoTransformer3DModel

    return tiny_build.seeded_components(
        seed,
        text_encoder=_text_encoder,
        transformer=lambda: LTX2VideoTransformer3DModel(**TRANSFORMER_CONFIG),
        connectors=CONNECTORS_CONFIG,
        vae=VAE_CONFIG,
        tokenizer=build_tokenizer(),
    )


# ------------------------------------------------------------------------------- weights file


def state_dict(components: dict[str, Any]) -> dict[str, torch.Tensor]:
    """One flat `<component>.<key>` dict of every stored component's weights and buffers."""
    out: dict[str, torch.Tensor] = {}
    for name in STORED:
        for key, value in components[name].state_dict().items():
            out[f"{name}.{key}"] = value.detach().contiguous().clone()
    return out


def load_state_dict(components: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
    """Load a `state_dict` output into `components`, strictly (a missing key is an error)."""
    for name in STORED:
        prefix = f"{name}."
        part = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        components[name].load_state_dict(part, strict=True)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def recorded_sha256() -> str:
    """The sha256 the recipe recorded for the committed weights."""
    import json

    if not RECORD_FILE.is_file():
        raise UserError(
            f"no {RECORD_FILE}: the demo weights are not installed; "
            "run `python -m demo.recipe --out demo/weights`"
        )
    return str(json.loads(RECORD_FILE.read_text())["sha256"])


def load_weights(path: Path = WEIGHTS_FILE, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The committed weights, after checking their sha256 against the recorded one."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UserError(
            f"demo weights {path} are missing; reinstall the package or rebuild them with "
            "`python -m demo.recipe --out demo/weights`"
        )
    expected = sha256 or recorded_sha256()
    actual = file_sha256(Path(path))
    if actual != expected:
        raise UserError(
            f"demo weights {path} have sha256 {actual[:12]}…, expected {expected[:12]}… "
            "(corrupted or edited): reinstall the package or rerun the recipe"
        )
    return load_file(str(path))


def build_demo_pipeline(weights: Path = WEIGHTS_FILE) -> Any:
    """The trained demo `LTX2Pipeline` in memory (float32, CPU)."""
    from diffusers import LTX2Pipeline

    components = build_components()
    load_state_dict(components, load_weights(weights))
    pipe = LTX2Pipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_demo_model(dest: Path) -> None:
    """Write the demo model as a diffusers pipeline folder (safetensors) at `dest`."""
    build_demo_pipeline().save_pretrained(str(dest), safe_serialization=True)


def demo_model_dirname() -> str:
    """`demo-<hash of spec and weights>[:12]`: new weights or sizes get a new folder."""
    from stagekit.hashing import sha256_json

    return f"demo-{sha256_json({'spec': demo_spec(), 'weights': recorded_sha256()})[:12]}"


# What the cache of one sample holds: x16 space, 16 latent channels, prompts of 32 tokens; the
# audio path and the text encoder are the tiny model's.
SPEC = ModelSpec(
    "demo",
    LATENT_CHANNELS,
    VAE_CONFIG["spatial_compression_ratio"],
    VAE_CONFIG["temporal_compression_ratio"],
    tiny.AUDIO_LATENT_CHANNELS,
    tiny.AUDIO_MEL_BINS,
    TEXT_MAX_TOKENS,
    (tiny.TEXT_HIDDEN,),
    tiny.TEXT_HIDDEN,
    tiny.TEXT_LAYERS + 1,
)
# `model.source=demo`, found by `ltx.bases` through the entry point in pyproject.toml
BASE = PackagedBase(
    name="demo",
    spec=SPEC,
    configs={"transformer": TRANSFORMER_CONFIG, "connectors": CONNECTORS_CONFIG},
    dirname=demo_model_dirname,
    save=save_demo_model,
)
