"""The VLM caption backend on a tiny random Qwen2-VL built here (no download), batched and
resumable after an interrupt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from curation.caption import caption, has_word
from curation.card import DatasetCard
from curation.config import CaptionConfig, CurationConfig
from curation.curate import curate
from curation.media import write_clip
from ltx.buckets import BucketRules
from stagekit.files import read_jsonl

DEFAULT = Path(__file__).resolve().parents[2] / "configs" / "curation" / "default.yaml"
CARD = DatasetCard(
    client="acme", adapter="mascot", trigger="zorblat", class_noun="mascot", owner="t", rights="t"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
WORDS = ["user", "assistant", "describe", "this", "video", "clip", "in", "one", "sentence.",
         "a", "mascot", "orange", "purple", "hat", "jumps", "over", "blue", "zorblat"]  # fmt: skip
TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|> "
    "{% else %}{{ c['text'] }} {% endif %}{% endfor %}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def build_tiny_qwen2_vl(dest: Path) -> Path:
    """A seeded random Qwen2-VL (2-layer text, 1-layer vision) + word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    vocab = {w: i for i, w in enumerate([*SPECIAL, *WORDS, "[UNK]"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="[UNK]",
        additional_special_tokens=SPECIAL[1:],
    )
    tokenizer.chat_template = TEMPLATE
    images = Qwen2VLImageProcessorPil(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112})
    ids = {t: vocab[t] for t in SPECIAL}
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]},
            "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
            "bos_token_id": ids["<|im_start|>"],
        },
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2},
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    images.save_pretrained(dest)
    return dest


def textured(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 255, (10, 10 + n, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(cells, 8, 0), 8, 1)
    return [np.ascontiguousarray(big[:64, 2 * i : 2 * i + 64]) for i in range(n)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("vlm")
    raw = root / "dataset" / "raw"
    raw.mkdir(parents=True)
    for i in range(5):
        write_clip(raw / f"clip_{i}.mp4", textured(17, seed=i), 24.0)
    (raw / "clip_0.txt").write_text("zorblat mascot from a sidecar")
    tree = {**yaml.safe_load(DEFAULT.read_text()), "workers": 1}
    curate(raw, root / "curated", CARD, CurationConfig.model_validate(tree), BucketRules(32, 8))
    return raw, root / "curated", build_tiny_qwen2_vl(root / "tiny-qwen2-vl")


def vlm_cfg(model: Path) -> CaptionConfig:
    return CaptionConfig(
        backends=["sidecar", "vlm", "template"],
        vlm={"path": str(model), "batch_size": 2, "max_new_tokens": 6, "image_size": 64},
    )


class Interrupt(Exception):
    pass


def test_vlm_captions_in_batches_and_resumes(setup, tmp_path: Path) -> None:
    raw, cur, model = setup
    out = tmp_path / "captioned"
    seen: list[int] = []

    def stop_after_first_batch(done: int) -> None:
        seen.append(done)
        raise Interrupt

    with pytest.raises(Interrupt):
        caption(cur, raw, out, CARD, vlm_cfg(model), on_batch=stop_after_first_batch)
    assert seen == [2] and not out.exists()  # nothing half-written
    progress = out.with_name(".captioned.vlm-progress.jsonl")
    assert len(progress.read_text().splitlines()) == 2
    resumed: list[int] = []
    summary = caption(cur, raw, out, CARD, vlm_cfg(model), on_batch=resumed.append)
    assert resumed == [4]  # only the two clips not done before: one batch
    assert (summary["from_sidecar"], summary["from_vlm"]) == (1, 4)
    rows = read_jsonl(out / "manifest.jsonl")
    vlm_rows = [r for r in rows if r["caption_source"] == "vlm"]
    assert len(vlm_rows) == 4 and all(has_word(r["caption"], "zorblat") for r in vlm_rows)
    fresh = caption(cur, raw, tmp_path / "again", CARD, vlm_cfg(model))  # progress reused
    assert {r["id"]: r["caption"] for r in read_jsonl(tmp_path / "again" / "manifest.jsonl")} == {
        r["id"]: r["caption"] for r in rows
    } and fresh["from_vlm"] == 4


def test_missing_model_folder_is_a_user_error(setup, tmp_path: Path) -> None:
    from stagekit.errors import UserError

    raw, cur, _ = setup
    with pytest.raises(UserError, match="no vision-language model at"):
        caption(cur, raw, tmp_path / "out", CARD, vlm_cfg(tmp_path / "nowhere"))
