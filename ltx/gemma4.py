"""LTX-2.5's text-encoder file (`text_encoders/gemma4-12b-with-proj-ltx-2.5-*.safetensors`): LTX's
fine-tuned Gemma 4 (HF key layout), the text projections, the tokenizer as uint8 tensors
(`tokenizer_json`, `hf_asset__<file>`) and the Gemma config in its metadata (`gemma_config`),
as Lightricks' ltx-core reads it (`text_encoders/gemma/gemma_assets.py`,
`encoders/encoder_configurator.py`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stagekit.errors import UserError
from stagekit.files import write_json

# 2.5's text-encoder file: tensors that are not Gemma weights (ltx-core gemma_assets.py)
_TEXT_ASSETS = ("tokenizer_json", "hf_asset__")
PROJECTION_PREFIX = "text_embedding_projection."


def write_gemma4_assets(path: Path, dest: Path) -> dict[str, Any]:
    """2.5's text-encoder file carries its Gemma config (metadata `gemma_config`) and its
    tokenizer (`tokenizer_json`, `hf_asset__<file>` tensors): written out as the view's
    `text_encoder/config.json` and `tokenizer/`. A stock Gemma 4 file is refused."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta, keys = f.metadata() or {}, set(f.keys())
        if "gemma_config" not in meta or not any(k.startswith(PROJECTION_PREFIX) for k in keys):
            raise UserError(
                f"{path} is not LTX-2.5's text encoder: it lacks the LTX projection or its "
                "gemma_config (a stock Gemma 4 is not a substitute; use "
                "gemma4-12b-with-proj-ltx-2.5-*.safetensors)"
            )
        assets = {k: f.get_tensor(k) for k in keys if k.startswith(_TEXT_ASSETS)}
    config = json.loads(meta["gemma_config"])
    (dest / "tokenizer").mkdir(exist_ok=True)
    for key, tensor in assets.items():
        name = "tokenizer.json" if key == "tokenizer_json" else key.removeprefix("hf_asset__")
        (dest / "tokenizer" / name).write_bytes(tensor.numpy().tobytes())
    write_json(dest / "text_encoder" / "config.json", config)
    return config


def check_gemma_version(transformer: Path, text_encoder: Path) -> None:
    """The transformer names the Gemma it was trained with (`gemma_source_checkpoint`
    metadata); a text encoder of another `gemma_version` is refused (as ltx-core does)."""
    _, meta = keys_and_metadata(transformer)
    expected = json.loads(meta.get("gemma_source_checkpoint", "{}")).get("gemma_version")
    _, text_meta = keys_and_metadata(text_encoder)
    found = json.loads(text_meta.get("gemma_config", "{}")).get("gemma_version")
    if expected and found != expected:
        raise UserError(
            f"{text_encoder}: Gemma version {found or 'none'}, but {transformer.name} was "
            f"trained with {expected}; use the text encoder shipped with the model"
        )


def load_gemma4(path: Path, config: dict[str, Any], dtype: str) -> Any:
    """The Gemma 4 of 2.5's text-encoder file (HF key layout), without its projection and
    tokenizer tensors (the connectors and the tokenizer take those)."""
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForImageTextToText

    from ltx.loading import torch_dtype

    text_config = AutoConfig.for_model(**config)
    with init_empty_weights():
        model = AutoModelForImageTextToText.from_config(text_config)
    with safe_open(str(path), "pt") as f:
        sd = {
            k: f.get_tensor(k)
            for k in f.keys()  # noqa: SIM118
            if not k.startswith((PROJECTION_PREFIX, *_TEXT_ASSETS))
        }
    wanted = set(model.state_dict())
    # the output head is tied to the embedding: files store it once
    missing = sorted(k for k in wanted - set(sd) if not k.endswith("lm_head.weight"))
    extra = sorted(set(sd) - wanted)
    if missing or extra:
        raise UserError(
            f"{path} does not fit its gemma_config: "
            + (f"missing {', '.join(missing[:5])} " if missing else "")
            + (f"unexpected {', '.join(extra[:5])}" if extra else "")
        )
    model.load_state_dict(sd, strict=False, assign=True)
    model.tie_weights()
    return model.to(torch_dtype(dtype)).eval()


def keys_and_metadata(path: Path) -> tuple[list[str], dict[str, str]]:
    """A safetensors file's keys and metadata, without reading a tensor."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys()), f.metadata() or {}
