"""Model specs: bucket rules agree with the real VAE config; bytes per cached sample."""

from __future__ import annotations

from ltx.buckets import bucket_rules_from_vae_config
from ltx.specs import LTX_2_0, LTX_2_0_VAE_CONFIG, LTX_2_3, cache_bytes


def test_spec_ratios_match_the_real_vae_config() -> None:
    rules = bucket_rules_from_vae_config(LTX_2_0_VAE_CONFIG)
    assert (rules.spatial, rules.temporal) == (LTX_2_0.spatial, LTX_2_0.temporal) == (32, 8)


def test_real_size_sample_bytes() -> None:
    """121x512x768 at 24 fps, bf16: latents [128, 16, 16, 24], audio [8, 126, 16]."""
    assert LTX_2_0.video_latent_shape(121, 512, 768) == (128, 16, 16, 24)
    assert LTX_2_0.audio_latent_shape(121, 24.0) == (8, 126, 16)
    b = cache_bytes(LTX_2_0, 121, 512, 768, 24.0)  # a 128-token caption
    assert b == {
        "video": 1_572_864,
        "audio": 32_256,
        "text": 983_040,  # [1, 128, 3840]
        "text_padding": 7_680,  # [1, 1, 3840]
        "text_length": 8,
        "total": 2_595_848,
        "text_padded": 7_872_512,  # [1, 1024, 3840] and the int64 mask [1, 1024]
        "stacked_gemma_instead": 385_351_680,
    }
    text = b["text"] + b["text_padding"] + b["text_length"]
    assert text <= b["text_padded"] / 4
    b23 = cache_bytes(LTX_2_3, 121, 512, 768, 24.0)
    extra = 4096 + 2048 - 3840  # 2.3: video 4096 + audio 2048 features instead of 3840
    assert b23["total"] == b["total"] + (128 + 1) * extra * 2 == 3_190_280
    assert b23["text_padded"] == 12_591_104


def test_a_caption_that_fills_the_window_takes_what_the_padded_layout_took() -> None:
    full = cache_bytes(LTX_2_0, 121, 512, 768, 24.0, text_tokens=None)
    assert full["text"] == 1024 * 3840 * 2 == full["text_padded"] - 1024 * 8
    assert cache_bytes(LTX_2_0, 121, 512, 768, 24.0, text_tokens=5000) == full
