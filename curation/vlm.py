"""Captions from a local vision-language model (Qwen2-VL class) through transformers.

The only module of `curation` that imports torch/transformers. Loads from a local folder only
(never a hub id), captions in batches, and appends each batch to a progress file so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

from curation.config import VlmConfig
from stagekit.errors import UserError
from stagekit.hashing import sha256_json


def caption_clips(
    clips: list[tuple[str, Path]],
    cfg: VlmConfig,
    progress: Path,
    identity: Any,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, str]:
    """{clip id: caption} for every clip, reusing captions already in `progress`.

    `identity` names the model's files: a changed model or prompt never reuses old captions.
    """
    key = sha256_json({"model": identity, "config": cfg.model_dump(exclude={"batch_size"})})
    done = _load_progress(progress, key)
    todo = [(cid, path) for cid, path in clips if cid not in done]
    if not todo:
        return done
    model, processor = load_vlm(Path(str(cfg.path)))
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start : start + cfg.batch_size]
        texts = describe(model, processor, [clip_frames(p, cfg) for _, p in batch], cfg)
        _append_progress(
            progress, key, [(cid, t) for (cid, _), t in zip(batch, texts, strict=True)]
        )
        done.update({cid: t for (cid, _), t in zip(batch, texts, strict=True)})
        if on_batch is not None:
            on_batch(len(done))
    return done


def load_vlm(path: Path) -> tuple[Any, Any]:
    """Model and (tokenizer, image processor) from a local `save_pretrained` folder.

    The tokenizer and image processor load on their own, not as Qwen2VLProcessor: that class
    also builds a video processor, which needs torchvision (absent beside the CPU torch).
    """
    if not (path / "config.json").is_file():
        raise UserError(
            f"no vision-language model at {path} (config.json missing): set "
            "curation.caption.vlm.path to a local Qwen2-VL folder"
        )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tokenizer.padding_side = "left"  # generation continues every row at its end
    tokenizer.chat_template = tokenizer.chat_template or _folder_template(path)
    images = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True).eval()
    return model, (tokenizer, images)


IMAGE_TOKEN = "<|image_pad|>"


@torch.no_grad()
def describe(
    model: Any, parts: tuple[Any, Any], clips: list[list[Image.Image]], cfg: VlmConfig
) -> list[str]:
    """One greedy caption per clip (each a list of frames), as single lines."""
    tokenizer, image_processor = parts
    content = [{"type": "image"}] * cfg.frames + [{"type": "text", "text": cfg.prompt}]
    chat = [{"role": "user", "content": content}]
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    pixels = image_processor(images=[i for frames in clips for i in frames], return_tensors="pt")
    # Each image's placeholder becomes one token per merged patch, as Qwen2VLProcessor does.
    per_image = (pixels["image_grid_thw"].prod(-1) // image_processor.merge_size**2).tolist()
    texts = []
    for c in range(len(clips)):
        text = prompt
        for n in per_image[c * cfg.frames : (c + 1) * cfg.frames]:
            text = text.replace(IMAGE_TOKEN, "<|placeholder|>" * n, 1)
        texts.append(text.replace("<|placeholder|>", IMAGE_TOKEN))
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    out = model.generate(**enc, **pixels, max_new_tokens=cfg.max_new_tokens, do_sample=False)
    new = out[:, enc["input_ids"].shape[1] :]
    return [" ".join(t.split()) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def _folder_template(path: Path) -> str | None:
    """A processor-level chat template (chat_template.jinja / .json) when the tokenizer has none."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text(encoding="utf-8"))[
            "chat_template"
        ]
    return None


def clip_frames(path: Path, cfg: VlmConfig) -> list[Image.Image]:
    """`cfg.frames` frames spread evenly over the clip, longest side `cfg.image_size`."""
    with av.open(str(path)) as container:
        frames = [f.to_image() for f in container.decode(video=0)]
    picks = [
        frames[round(i * (len(frames) - 1) / max(1, cfg.frames - 1))] for i in range(cfg.frames)
    ]
    out = []
    for img in picks:
        img = img.copy()
        img.thumbnail((cfg.image_size, cfg.image_size), Image.Resampling.BICUBIC)
        out.append(img)
    return out


def _load_progress(path: Path, key: str) -> dict[str, str]:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return {r["id"]: r["caption"] for r in rows if r.get("key") == key}


def _append_progress(path: Path, key: str, captions: list[tuple[str, str]]) -> None:
    """Appended and flushed per batch: an interrupt loses at most the batch in flight."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for cid, text in captions:
            f.write(json.dumps({"key": key, "id": cid, "caption": text}) + "\n")
        f.flush()
