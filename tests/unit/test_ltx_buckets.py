"""Bucket rules derived from the video VAE config."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltx.buckets import BucketRules, bucket_rules, bucket_rules_from_vae_config
from ltx.tiny_build import save_tiny_model
from ltx.versions import VERSIONS

# AutoencoderKLLTX2Video config of the released LTX-2.0 (diffusers' convert_ltx2_to_diffusers.py)
LTX2_VAE_CONFIG = VERSIONS["2.0"].configs["vae"]


def test_real_ltx2_config_gives_32_and_8() -> None:
    assert bucket_rules_from_vae_config(LTX2_VAE_CONFIG) == BucketRules(spatial=32, temporal=8)


def test_ratios_are_derived_when_the_keys_are_missing() -> None:
    cfg = {k: v for k, v in LTX2_VAE_CONFIG.items() if "compression_ratio" not in k}
    # diffusers' own fallback (patch * 2**blocks) would say 64 / 16 here
    assert bucket_rules_from_vae_config(cfg) == BucketRules(spatial=32, temporal=8)


def test_spatial_is_never_finer_than_the_pipelines_32() -> None:
    cfg = {
        "patch_size": 4,
        "downsample_type": ["spatiotemporal"],
        "spatio_temporal_scaling": [True],
    }
    assert bucket_rules_from_vae_config(cfg) == BucketRules(spatial=32, temporal=2)
    coarse = {**LTX2_VAE_CONFIG, "spatial_compression_ratio": 64}
    assert bucket_rules_from_vae_config(coarse).spatial == 64


def test_tiny_model(tmp_path: Path) -> None:
    save_tiny_model(tmp_path / "m", seed=0)
    rules = bucket_rules(tmp_path / "m")
    assert rules == BucketRules(spatial=32, temporal=2)
    assert rules.frames_ok(17) and rules.frames_ok(9) and not rules.frames_ok(10)
    rules.check(96, 64, 17)


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"vae/config\.json"):
        bucket_rules(tmp_path)
