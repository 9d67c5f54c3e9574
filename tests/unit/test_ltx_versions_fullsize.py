"""Full-size facts of each LTX version, on PyTorch's meta device: our official key names are
checked against Lightricks' own model classes (ltx-core 1.0.0 from PyPI, installed with
`--no-deps` by `make setup`), never against a copy of our mapping.

ltx-core 1.0.0 builds the 2.0 and 2.3 transformer, the text connectors and both vocoders. It
predates 2.5: the 2.5 transformer is 2.3's with the two deltas Lightricks' source names
(ltx-core HEAD `model/transformer/model.py` L146-147 `ff_bias=ff_bias`, L215-219
`keyframes_abs_pos_embedding = Parameter(zeros(1, inner_dim))`).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any

import pytest
import torch

from ltx.single_file import official_key
from ltx.versions import VERSIONS

pytest.importorskip("ltx_core", reason="ltx-core is installed by `make setup` (--no-deps)")

# Every module flag ltx-core's LTXModelConfigurator checks (model_configurator.py L25-42),
# as the official checkpoints' metadata sets them.
_LTX_CORE_CHECKED = {
    "dropout": 0.0,
    "attention_bias": True,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "use_linear_projection": False,
    "only_cross_attention": False,
    "cross_attention_norm": True,
    "double_self_attention": False,
    "upcast_attention": False,
    "standardization_norm": "rms_norm",
    "norm_elementwise_affine": False,
    "qk_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "use_audio_video_cross_attention": True,
    "share_ff": False,
    "av_cross_ada_norm": True,
    "use_middle_indices_grid": True,
}
_LTX_CORE_TRANSFORMER = {
    "2.0": {"caption_channels": 3840},
    # 2.3: gated attention, prompt AdaLN; the caption projection moved to the text encoder side
    "2.3": {
        "apply_gated_attention": True,
        "cross_attention_adaln": True,
        "caption_proj_before_connector": True,
    },
}
PARAMETERS = {"2.0": 18_876_174_592, "2.3": 18_988_838_144}
CONNECTOR_PARAMETERS = {"2.0": 1.43e9, "2.3": 3.17e9}


def _on_meta(cls: Any, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return cls.from_config(config).state_dict()


def _ours(name: str, version: str) -> dict[str, torch.Tensor]:
    from ltx.single_file import component_class

    config = VERSIONS[version].configs[name]
    if name == "vocoder":
        config = {**config, "_class_name": VERSIONS[version].vocoder_class}
    return _on_meta(component_class(name, config), config)


def _ltx_core_transformer(version: str) -> dict[str, torch.Tensor]:
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

    cfg = {
        **_LTX_CORE_CHECKED,
        "rope_type": "split",
        "frequencies_precision": "float64",
        "num_attention_heads": 32,
        "attention_head_dim": 128,
        "audio_num_attention_heads": 32,
        "audio_attention_head_dim": 64,
        **_LTX_CORE_TRANSFORMER[version],
    }
    with torch.device("meta"):
        return LTXModelConfigurator.from_config({"transformer": cfg}).state_dict()


def _official(name: str, version: str) -> set[str]:
    return {official_key(name, k) for k in _ours(name, version)}


@pytest.mark.parametrize("version", ["2.0", "2.3"])
def test_transformer_keys_are_ltx_core_keys_at_full_size(version: str) -> None:
    ours = _ours("transformer", version)
    theirs = {"model.diffusion_model." + k for k in _ltx_core_transformer(version)}
    mapped = {official_key("transformer", k) for k in ours}
    assert len(mapped) == len(ours)  # the mapping is one to one
    assert mapped - theirs == set() and theirs - mapped == set()
    count = sum(v.numel() for v in ours.values())
    print(f"LTX-{version} transformer: {count:,} parameters, {len(ours)} tensors")
    assert count == PARAMETERS[version]


def test_2_5_transformer_is_2_3_without_video_ff_bias_with_keyframe_marker() -> None:
    base = {"model.diffusion_model." + k for k in _ltx_core_transformer("2.3")}
    biases = {k for k in base if ".ff.net." in k and k.endswith(".bias") and ".audio_ff." not in k}
    assert len(biases) == 48 * 2
    expected = (base - biases) | {"model.diffusion_model.keyframes_abs_pos_embedding"}
    ours = _ours("transformer", "2.5")
    assert {official_key("transformer", k) for k in ours} == expected
    count = sum(v.numel() for v in ours.values())
    print(f"LTX-2.5 transformer: {count:,} parameters")
    # 2.3 minus 48 x (16384 + 4096) video ff biases, plus the 4096-wide marker
    assert count == 18_988_838_144 - 48 * (16384 + 4096) + 4096


@pytest.mark.parametrize("version", ["2.0", "2.3"])
def test_connector_keys_are_ltx_core_keys(version: str) -> None:
    from ltx_core.model.transformer.rope import LTXRopeType
    from ltx_core.text_encoders.gemma.embeddings_connector import Embeddings1DConnector

    config = VERSIONS[version].configs["connectors"]
    ours = _official("connectors", version)
    for modality in ("video", "audio"):
        with torch.device("meta"):
            theirs = Embeddings1DConnector(
                attention_head_dim=config[f"{modality}_connector_attention_head_dim"],
                num_attention_heads=config[f"{modality}_connector_num_attention_heads"],
                num_layers=config[f"{modality}_connector_num_layers"],
                rope_type=LTXRopeType.SPLIT,
                apply_gated_attention=config[f"{modality}_gated_attn"],
            ).state_dict()
        prefix = f"model.diffusion_model.{modality}_embeddings_connector."
        assert {k for k in ours if k.startswith(prefix)} == {prefix + k for k in theirs}
    projections = {k.split(".")[1] for k in ours if k.startswith("text_embedding_projection.")}
    per_modality = {"video_aggregate_embed", "audio_aggregate_embed"}
    assert projections == ({"aggregate_embed"} if version == "2.0" else per_modality)
    count = sum(v.numel() for v in _ours("connectors", version).values())
    print(f"LTX-{version} connectors + projection: {count:,} parameters")
    assert count == pytest.approx(CONNECTOR_PARAMETERS[version], rel=0.005)


def _ltx_core_vocoders() -> Any:
    """ltx-core's vocoder module without its package __init__, which imports torchaudio for the
    audio preprocessor (no torchaudio wheel matches torch 2.13; the vocoder does not use it)."""
    name = "ltx_core.model.audio_vae"
    if name not in sys.modules:
        root = importlib.util.find_spec("ltx_core.model").submodule_search_locations[0]
        package = types.ModuleType(name)
        package.__path__ = [f"{root}/audio_vae"]
        sys.modules[name] = package
    from ltx_core.model.audio_vae import vocoder

    return vocoder


def test_vocoder_keys_are_ltx_core_keys() -> None:
    vocoder = _ltx_core_vocoders()
    v20 = VERSIONS["2.0"].configs["vocoder"]
    with torch.device("meta"):
        plain = vocoder.Vocoder(
            upsample_rates=v20["upsample_factors"],
            upsample_kernel_sizes=v20["upsample_kernel_sizes"],
            upsample_initial_channel=v20["hidden_channels"],
        ).state_dict()
    assert _official("vocoder", "2.0") == {"vocoder." + k for k in plain}

    bwe = VERSIONS["2.3"].configs["vocoder"]

    def generator(prefix: str) -> Any:
        return vocoder.Vocoder(
            upsample_rates=bwe[f"{prefix}upsample_factors"],
            upsample_kernel_sizes=bwe[f"{prefix}upsample_kernel_sizes"],
            upsample_initial_channel=bwe[f"{prefix}hidden_channels"],
            resblock="AMP1",
            activation="snakebeta",
            use_bias_at_final=False,
        )

    with torch.device("meta"):
        theirs = vocoder.VocoderWithBWE(
            vocoder=generator(""),
            bwe_generator=generator("bwe_"),
            mel_stft=vocoder.MelSTFT(512, 80, 512, 64),
            input_sampling_rate=16000,
            output_sampling_rate=48000,
            hop_length=80,
        ).state_dict()
    ours = _official("vocoder", "2.3")
    print(f"LTX-2.3 vocoder with BWE: {len(ours)} keys")
    assert ours == {"vocoder." + k for k in theirs}


@pytest.mark.parametrize("name", ["vae", "audio_vae"])
def test_2_0_vae_keys_round_trip_through_diffusers_own_converter(name: str) -> None:
    """diffusers 0.42.1's single-file converters know the 2.0 VAE layouts (not 2.3's decoder)."""
    from diffusers.loaders import single_file_utils as sfu

    convert = {
        "vae": sfu.convert_ltx2_vae_to_diffusers,
        "audio_vae": sfu.convert_ltx2_audio_vae_to_diffusers,
    }[name]
    ours = _ours(name, "2.0")
    official = {official_key(name, k): None for k in ours}
    assert set(convert(official)) == set(ours)


def test_2_3_vae_decoder_has_the_four_stage_names() -> None:
    # diffusers' conversion script LTX_2_3_VIDEO_VAE_RENAME_DICT: up_blocks.7/8 are the
    # fourth stage's upsampler and resnets
    keys = _official("vae", "2.3")
    assert any(k.startswith("vae.decoder.up_blocks.7.") for k in keys)
    assert any(k.startswith("vae.decoder.up_blocks.8.res_blocks.") for k in keys)
    assert not any(k.startswith("vae.decoder.up_blocks.9.") for k in keys)


@pytest.mark.parametrize("version", ["2.0", "2.3", "2.5"])
@pytest.mark.parametrize("name", ["transformer", "connectors", "vae", "audio_vae", "vocoder"])
def test_every_full_size_key_has_one_official_name(version: str, name: str) -> None:
    """One to one, in the official vocabulary (no diffusers-only segment left), and owned by
    the component it came from: the loader can invert it for every version at full size."""
    from ltx.single_file import owner

    ours = _ours(name, version)
    mapped = {official_key(name, k) for k in ours}
    assert len(mapped) == len(ours)
    assert {owner(k) for k in mapped} == {name}
    diffusers_only = (
        ".resnets.",
        "latents_mean",
        ".upsamplers.",
        ".norm_q.",
        "proj_in.",
        "act_out",
    )
    assert not [k for k in mapped if any(s in k for s in diffusers_only)]
