"""Key coverage per consumer and per version: every key of every export lands on a module of the
full-size model of its LTX version, in that consumer's naming (meta device, nothing allocated).

The names each consumer matches against come from the consumer's side, not from our key map:
- diffusers: `LTX2VideoTransformer3DModel` (diffusers 0.42.1) built from the version's config;
  `load_lora_weights` strips `transformer.` and PEFT injects by module name.
- ltx-pipelines: ltx-core 1.0.0's own `LTXModel` (via `LTXModelConfigurator`); its loader renames
  keys with `LTXV_LORA_COMFY_RENAMING_MAP` and fuses `<m>.lora_A/B.weight` into `<m>.weight`
  (`fuse_loras.py` L46-65).
- ComfyUI: its LTX-2 model holds the official checkpoint's `model.diffusion_model.*` weights
  under `diffusion_model.` (the same names as ltx-core's model), and `comfy/lora.py`
  `model_lora_keys_unet` maps LoRA module key `diffusion_model.<m>` to weight
  `diffusion_model.<m>.weight` for every such weight.
LTX-2.5 (which ltx-core 1.0.0 predates) is 2.3's layout for every Linear weight (see
test_ltx_versions_fullsize.py: it differs by video ff biases and a keyframe marker only).
"""

from __future__ import annotations

import pytest
import torch

from ltx.consumer_files import ExportRefused, consumer_state
from ltx.exports import CONSUMERS, KINDS
from ltx.lora import add_lora
from tests.unit.test_ltx_versions_fullsize import _ltx_core_transformer, _ours

pytest.importorskip("ltx_core", reason="ltx-core is installed by `make setup` (--no-deps)")

SUFFIXES = (
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora_magnitude_vector",
    ".dora_scale",
    ".alpha",
    ".lokr_w1",
    ".lokr_w1_a",
    ".lokr_w1_b",
    ".lokr_w2",
    ".lokr_w2_a",
    ".lokr_w2_b",
)
_CACHE: dict[str, set[str]] = {}


def _module(key: str, prefix: str) -> str:
    assert key.startswith(prefix), key
    for suffix in SUFFIXES:
        if key.endswith(suffix):
            return key.removeprefix(prefix).removesuffix(suffix)
    raise AssertionError(f"{key}: not an adapter entry")


def _ltx_core_weights(version: str) -> set[str]:
    core = "2.3" if version == "2.5" else version
    if core not in _CACHE:
        _CACHE[core] = {k for k in _ltx_core_transformer(core) if k.endswith(".weight")}
    return _CACHE[core]


def _adapted(version: str, kind: str, rank: int) -> torch.nn.Module:
    """The full-size transformer of `version` on meta with an adapter on every block Linear
    (`all`, the widest preset)."""
    from ltx.single_file import component_class
    from ltx.versions import VERSIONS

    config = VERSIONS[version].configs["transformer"]
    with torch.device("meta"):
        transformer = component_class("transformer", config).from_config(config)
        add_lora(transformer, rank, 16.0, 0.0, "all", kind=kind)
    return transformer


# rank 32 (a LoKr's equal LoRA is then larger than its update: refused for diffusers and
# ltx-pipelines); a rank-1 LoKr (w2 decomposed) is converted, and its keys are checked too
CASES = [(kind, 32) for kind in KINDS] + [("lokr", 1)]


@pytest.mark.parametrize("version", ["2.0", "2.3", "2.5"])
@pytest.mark.parametrize(("kind", "rank"), CASES)
def test_every_export_key_lands_on_a_full_size_module(version: str, kind: str, rank: int) -> None:
    transformer = _adapted(version, kind, rank)
    linear = {n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)}
    diffusers_weights = {f"{n}.weight" for n in linear} | {
        k for k in _ours("transformer", version) if k.endswith(".weight")
    }
    core = _ltx_core_weights(version)
    adapted = {n.removesuffix(".base_layer") for n in linear if n.endswith(".base_layer")}
    for consumer in CONSUMERS:
        try:
            sd = consumer_state(transformer, consumer)
        except ExportRefused as refused:
            print(f"LTX-{version} {kind} r{rank} × {consumer}: refused ({refused})")
            assert (kind, rank) in {("dora", 32), ("lokr", 32)}
            continue
        if consumer == "diffusers":
            modules = {_module(k, "transformer.") for k in sd}
            assert {f"{m}.weight" for m in modules} <= diffusers_weights
        else:
            from ltx_core.loader.sd_ops import LTXV_LORA_COMFY_RENAMING_MAP

            if consumer == "ltx-pipelines":
                sd = {LTXV_LORA_COMFY_RENAMING_MAP.apply_to_key(k): v for k, v in sd.items()}
            prefix = "" if consumer == "ltx-pipelines" else "diffusion_model."
            modules = {_module(k, prefix) for k in sd}
            missing = {f"{m}.weight" for m in modules} - core
            assert not missing, sorted(missing)[:5]
        assert len(modules) == len(adapted)  # every adapted module, once
        print(f"LTX-{version} {kind} r{rank} × {consumer}: {len(sd)} keys, {len(modules)} modules")
