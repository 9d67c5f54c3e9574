"""The caption's text in a cache shard: only the attended tokens are stored (`compact_text`);
training re-pads them bit for bit (`text_inputs`)."""

from __future__ import annotations

import torch

TEXT, PAD = "text.", "text_pad."  # text.<name> [1, n, D]; text_pad.<name> [1, 1, D]

TEXT_LENGTH = "text_length"  # int64 [1]: T, the length prompts were left-padded to

MASK = "prompt_attention_mask"


def compact_text(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One prompt's `encode_prompts` output -> its shard tensors: `text.<name>` [1, n, D] for the
    n attended tokens, `text_pad.<name>` [1, 1, D] (what every padded position held: the
    projection of a zero row) and `text_length` [1] = T."""
    mask = features[MASK]
    length, n = mask.shape[-1], int(mask.sum())
    if mask.shape[0] != 1 or not torch.equal(mask.cpu(), left_padding_mask(n, length)):
        raise ValueError(f"expected one left-padded prompt, got a mask {list(mask.shape)}")
    out = {TEXT_LENGTH: torch.tensor([length], dtype=torch.int64)}
    for name, value in features.items():
        if name == MASK:
            continue
        padded = value[:, : length - n]
        pad = padded[:, :1] if n < length else torch.zeros_like(value[:, :1])
        # Re-padding must give back exactly these tensors: refuse anything a row cannot rebuild.
        if not torch.equal(padded, pad.expand_as(padded)):
            raise ValueError(f"{name}: the padded positions differ; cannot store it compactly")
        out[f"{TEXT}{name}"] = value[:, length - n :].clone()
        out[f"{PAD}{name}"] = pad.clone()
    return out


def text_inputs(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A shard's text as training feeds it, bit for bit what `encode_prompts` gave:
    `prompt_features` [1, T, D] (and `audio_prompt_features` [1, T, D_a] where cached),
    left-padded, and `prompt_attention_mask` [1, T] int64 0/1. Reads both layouts."""
    if TEXT_LENGTH not in tensors:  # format 2 stored the padded tensors themselves
        return {k.removeprefix(TEXT): v for k, v in tensors.items() if k.startswith(TEXT)}
    length = int(tensors[TEXT_LENGTH])
    out = {}
    for key, value in tensors.items():
        if key.startswith(TEXT):
            name, n = key.removeprefix(TEXT), value.shape[1]
            pad = tensors[PAD + name].expand(value.shape[0], length - n, -1)
            out[name] = torch.cat([pad, value], dim=1)
            out[MASK] = left_padding_mask(n, length)
    return out


def left_padding_mask(tokens: int, length: int) -> torch.Tensor:
    """[1, length] int64: zeros, then `tokens` ones (Gemma pads prompts on the left)."""
    mask = torch.zeros(1, length, dtype=torch.int64)
    mask[:, length - tokens :] = 1
    return mask
