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
    b = cache_bytes(LTX_2_0, 121, 512, 768, 24.0)
    assert b == {
        "video": 1_572_864,
        "audio": 32_256,
        "text": 7_864_320,
        "mask": 8_192,
        "total": 9_477_632,
        "stacked_gemma_instead": 385_351_680,
    }
    assert cache_bytes(LTX_2_3, 121, 512, 768, 24.0)["total"] == 9_477_632 + 4_718_592
