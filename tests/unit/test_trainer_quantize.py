"""The quantised frozen base (`model.quantize`): each format's error against the float forward,
gradients only on the adapter, what each library keeps for backward, refusals before loading."""

from __future__ import annotations

import sys
import weakref
from pathlib import Path

import pytest
import torch

import trainer.quantize as quantize
from ltx.config import ModelConfig
from ltx.loading import ensure_model, load_components
from ltx.lora import add_lora
from stagekit.errors import ConfigError
from trainer.config import LoraConfig, TrainerConfig
from trainer.placement import check_placement, place_base
from trainer.quantize import (
    check_supported,
    dequantized_weight,
    module_kind,
    quantization_of,
    quantize_base,
    quantize_linear,
    quantized_modules,
    stored_bytes,
)

FORMATS = ["int8", "fp8", "nf4"]
CPU = torch.device("cpu")
DEMO = ModelConfig(name="ltx2-demo", source="demo")
# Relative L2 error of the video velocity against the float32 forward, every block Linear of the
# demo base quantised (its trained weights; random inputs, seed 0). Measured: int8 0.0063,
# fp8 0.0250, nf4 0.1035 (the tiny random model: 0.0040, 0.0277, 0.0723).
MAX_ERROR = {"int8": 0.008, "fp8": 0.032, "nf4": 0.125}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_model(DEMO, tmp_path_factory.mktemp("models"))


def _inputs(transformer: torch.nn.Module) -> dict:
    """One denoiser call on a 2x4x4 latent video, 5 audio latents and 16 text tokens."""
    c = transformer.config
    g = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(1, 2 * 4 * 4, c.in_channels, generator=g),
        "audio_hidden_states": torch.randn(1, 5, c.audio_in_channels, generator=g),
        "encoder_hidden_states": torch.randn(1, 16, c.caption_channels, generator=g),
        "audio_encoder_hidden_states": torch.randn(1, 16, c.caption_channels, generator=g),
        "timestep": torch.tensor([500.0]),
        "num_frames": 2,
        "height": 4,
        "width": 4,
        "audio_num_frames": 5,
        "fps": 24.0,
        "return_dict": False,
    }


def _velocity(transformer: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return transformer.eval()(**_inputs(transformer))[0]


def _block_linears(transformer: torch.nn.Module) -> set[str]:
    return {
        n
        for n, m in transformer.named_modules()
        if isinstance(m, torch.nn.Linear) and n.startswith("transformer_blocks.")
    }


# ------------------------------------------------------------------------------ the forward


@pytest.mark.parametrize("kind", FORMATS)
def test_quantised_forward_is_within_the_stated_error(demo_dir: Path, kind: str) -> None:
    float_base = load_components(demo_dir, ["transformer"])["transformer"]
    expected = _velocity(float_base)
    base = place_base(demo_dir, DEMO.model_copy(update={"quantize": kind}), CPU)
    error = ((_velocity(base) - expected).norm() / expected.norm()).item()
    print(f"{kind}: relative error {error:.4f}")
    assert 0 < error < MAX_ERROR[kind]
    # every block Linear and nothing else: embeddings, norms, proj_out stay float
    assert set(quantized_modules(base)) == _block_linears(float_base)
    assert quantization_of(base) == kind
    assert type(base.proj_out) is torch.nn.Linear and base.proj_out.weight.dtype == torch.float32


@pytest.mark.parametrize(("kind", "ratio"), [("int8", 0.25), ("fp8", 0.25), ("nf4", 0.125)])
def test_quantised_layers_hold_a_fraction_of_the_float_bytes(
    demo_dir: Path, kind: str, ratio: float
) -> None:
    base = load_components(demo_dir, ["transformer"])["transformer"]
    report = quantize_base(base, kind, CPU)
    assert report.modules == len(quantized_modules(base)) > 0
    # float32 weights -> 1 byte (int8, fp8) or 4 bits (nf4) per weight, plus scales
    assert ratio < report.quantized_bytes / report.float_bytes < ratio * 1.25
    assert kind in report.describe()


def test_layers_are_quantised_one_at_a_time_and_each_float_layer_freed(
    demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a layer is quantised, the float layer before it is already gone: the float base
    never accumulates on the device beside the quantised one."""
    base = load_components(demo_dir, ["transformer"])["transformer"]
    originals = [
        weakref.ref(m.weight) for n, m in base.named_modules() if quantize.quantizable(n, m)
    ]
    calls: list[bool] = []

    def spy(linear: torch.nn.Linear, kind: str, device: torch.device) -> torch.nn.Module:
        calls.append(all(ref() is None for ref in originals[: len(calls)]))
        return quantize_linear(linear, kind, device)

    monkeypatch.setattr(quantize, "quantize_linear", spy)
    quantize_base(base, "int8", CPU)
    assert len(calls) == len(originals) and all(calls)
    assert all(ref() is None for ref in originals)


def test_swapped_blocks_go_back_to_the_host_once_quantised(
    demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Block swap streams the last blocks from host memory: their layers, and only theirs, are
    sent back to the host right after each is quantised on the device."""
    base = load_components(demo_dir, ["transformer"])["transformer"]
    sent_back: list[torch.nn.Module] = []

    def spy(linear: torch.nn.Linear, kind: str, device: torch.device) -> torch.nn.Module:
        layer = quantize_linear(linear, kind, device)
        layer.to = lambda where: sent_back.append(layer) or layer
        return layer

    monkeypatch.setattr(quantize, "quantize_linear", spy)
    quantize_base(base, "int8", CPU, host_blocks=1)
    last = f"transformer_blocks.{len(base.transformer_blocks) - 1}."
    expected = [m for n, m in quantized_modules(base).items() if n.startswith(last)]
    assert expected and [id(m) for m in sent_back] == [id(m) for m in expected]


# --------------------------------------------------------------------------- training on it


CASES = [(k, a) for k in FORMATS for a in ("lora", "dora", "lokr") if (k, a) != ("nf4", "lokr")]


@pytest.mark.parametrize(("kind", "adapter"), CASES)
def test_one_step_trains_the_adapter_and_nothing_else(
    demo_dir: Path, kind: str, adapter: str
) -> None:
    base = place_base(demo_dir, DEMO.model_copy(update={"quantize": kind}), CPU)
    frozen = {n: stored(m) for n, m in quantized_modules(base).items()}
    base.requires_grad_(False)
    add_lora(base, 4, 8, 0.0, "video_attention_ff", kind=adapter)
    base.enable_gradient_checkpointing()
    params = {n: p for n, p in base.named_parameters() if p.requires_grad}
    assert params and all(p.dtype == torch.float32 for p in params.values())
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.AdamW(params.values(), lr=1e-2)
    base.train()
    base(**_inputs(base))[0].square().mean().backward()
    with_grad = {n for n, p in base.named_parameters() if p.grad is not None}
    assert with_grad == set(params)
    optimizer.step()
    assert any(not torch.equal(p, before[n]) for n, p in params.items())
    # the quantised base is exactly as it was
    after = {n: stored(m) for n, m in quantized_modules(base).items()}
    assert after.keys() == frozen.keys()
    assert all(torch.equal(after[n], frozen[n]) for n in frozen)


def stored(module: torch.nn.Module) -> torch.Tensor:
    """The quantised layer's stored bytes (data), as a plain tensor."""
    weight = module.weight
    return (weight._data if hasattr(weight, "_data") else weight.data).view(torch.uint8).clone()


def test_dequantized_weight_is_what_the_layer_computes_with() -> None:
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    x = torch.randn(3, 64, generator=g)
    for kind in FORMATS:
        layer = quantize_linear(linear, kind, CPU)
        assert module_kind(layer) == kind
        expected = torch.nn.functional.linear(x, dequantized_weight(layer), layer.bias)
        torch.testing.assert_close(layer(x), expected, rtol=1e-6, atol=1e-6)
        assert stored_bytes(layer.weight) < linear.weight.numel() * 4 / 3


# ------------------------------------------------------------------ kept for backward, measured


def _leaves(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors holding a (possibly subclass) tensor's bytes."""
    if hasattr(t, "__tensor_flatten__") and type(t) is not torch.nn.Parameter:
        names, _ = t.__tensor_flatten__()
        return [leaf for n in names for leaf in _leaves(getattr(t, n))]
    return [t]


def _ctx_tensors(root: object) -> list[torch.Tensor]:
    """Tensors that custom autograd Functions stash on ctx (bitsandbytes' `ctx.tensors`),
    which `saved_tensors_hooks` does not see."""
    found, seen, stack = [], set(), [root]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for value in getattr(node, "__dict__", {}).values():
            for item in value if isinstance(value, tuple | list) else (value,):
                if isinstance(item, torch.Tensor):
                    found.append(item)
        stack.extend(n for n, _ in node.next_functions)
    return found


def kept_for_backward(layer: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Bytes the autograd graph of `layer(x)` keeps beyond the layer's own stored parameters:
    `weight_copy` (float tensors at least as large as the weight: a dequantised copy) and
    `other` (activations: the input, LoRA intermediates), each storage counted once."""
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    saved += _ctx_tensors(y.grad_fn)
    own = [*layer.parameters(), *layer.buffers()]
    owned = {leaf.untyped_storage().data_ptr() for t in own for leaf in _leaves(t)}
    weight_numel = max(p.numel() for p in layer.parameters() if not p.requires_grad)
    kept, counted = {"weight_copy": 0, "other": 0}, set()
    for leaf in (leaf for t in saved for leaf in _leaves(t)):
        ptr = leaf.untyped_storage().data_ptr()
        if ptr in owned or ptr in counted:
            continue
        counted.add(ptr)
        big = leaf.is_floating_point() and leaf.numel() >= weight_numel
        kept["weight_copy" if big else "other"] += leaf.untyped_storage().nbytes()
    y.float().sum().backward()
    return kept


IN, OUT, TOKENS = 256, 256, 64


def _float_linear() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(IN, OUT).to(torch.bfloat16).requires_grad_(False)


def _bnb_int8() -> torch.nn.Module:
    import bitsandbytes as bnb

    linear = _float_linear()
    layer = bnb.nn.Linear8bitLt(IN, OUT, has_fp16_weights=False, threshold=0.0)
    layer.weight = bnb.nn.Int8Params(
        linear.weight.data, requires_grad=False, has_fp16_weights=False
    )._quantize(CPU)
    layer.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
    return layer


def _torchao(kind: str) -> torch.nn.Module:
    pytest.importorskip("torchao", reason="torchao is not a dependency (rejected: see docs)")
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    holder = torch.nn.Sequential(_float_linear())
    quantize_(holder, Int8WeightOnlyConfig() if kind == "int8" else Float8WeightOnlyConfig())
    return holder[0]


# (backend, builder, chosen for a format): a bf16 base layer, as production loads it
BACKENDS = {
    "float bf16 Linear": (_float_linear, False),
    "optimum-quanto qint8": (lambda: quantize_linear(_float_linear(), "int8", CPU), True),
    "optimum-quanto qfloat8": (lambda: quantize_linear(_float_linear(), "fp8", CPU), True),
    "bitsandbytes nf4": (lambda: quantize_linear(_float_linear(), "nf4", CPU), True),
    "bitsandbytes LLM.int8": (_bnb_int8, False),
    "torchao int8 weight-only": (lambda: _torchao("int8"), False),
    "torchao float8 weight-only": (lambda: _torchao("fp8"), False),
}


def _lora(layer: torch.nn.Module) -> torch.nn.Module:
    """`layer` under PEFT's generic LoRA (rank 4, float32), as `add_lora` wraps the base."""
    from peft import LoraConfig as PeftLora
    from peft import inject_adapter_in_model

    holder = torch.nn.Sequential(layer).requires_grad_(False)
    inject_adapter_in_model(PeftLora(r=4, lora_alpha=4, target_modules=["0"]), holder)
    for name, p in holder.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
    return holder


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_bytes_kept_for_backward(backend: str) -> None:
    """A frozen 256x256 layer computing in bf16, 64 tokens whose gradient flows: the bytes its
    backward keeps beyond its own stored weights, alone and under a float32 LoRA. Measured
    (weight copy / other bytes, alone; under LoRA): float bf16 0/0; 0/66,560 (the LoRA's own
    float32 input and A·x); quanto qint8, qfloat8 (our forward) and bitsandbytes nf4: the
    same; bitsandbytes LLM.int8 0/32,768 (the input, bf16); 0/99,328; torchao int8
    131,072/512 (a bf16 copy of the weight and of the bias); 131,072/67,072; torchao float8
    131,072/0; 131,072/66,560."""
    build, chosen = BACKENDS[backend]
    x = torch.randn(1, TOKENS, IN).to(torch.bfloat16).requires_grad_(True)
    alone = kept_for_backward(build(), x)
    with_lora = kept_for_backward(_lora(build()), x)
    print(f"{backend}: alone {alone}, under LoRA {with_lora}")
    if chosen:  # nothing beyond what a float base keeps
        assert alone == {"weight_copy": 0, "other": 0}
        assert with_lora == kept_for_backward(_lora(_float_linear()), x)
    elif backend.startswith("torchao"):
        assert alone["weight_copy"] == OUT * IN * 2  # why it is not used


# ------------------------------------------------------------------------ refused before loading


def test_fp8_on_a_card_without_fp8_is_refused_before_loading(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    monkeypatch.setattr("trainer.placement.load_components", _never_loads)
    cfg = DEMO.model_copy(update={"quantize": "fp8"})
    with pytest.raises(ConfigError, match=r"fp8 .*8\.9.*NVIDIA A100 is 8\.0.*quantize=int8"):
        place_base(Path("unused"), cfg, torch.device("cuda", 0))


def _never_loads(*args: object, **kwargs: object) -> None:
    raise AssertionError("weights were loaded before the check")


def test_a_missing_library_is_refused_with_the_install_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(
        ConfigError, match=r"nf4 needs bitsandbytes .*: pip install 'ltx-lora\[quant\]'"
    ):
        check_supported("nf4", CPU)


def test_a_library_that_cannot_run_on_the_device_is_refused() -> None:
    # bitsandbytes has no kernel for the meta device: its own error, in a ConfigError
    with pytest.raises(
        ConfigError, match=r"model.quantize=nf4: bitsandbytes .* cannot run on meta"
    ):
        check_supported("nf4", torch.device("meta"))


@pytest.mark.parametrize(
    ("quantize", "lora", "trainer", "match"),
    [
        ("nf4", LoraConfig(kind="lokr"), TrainerConfig(), "lora.kind=lokr cannot train on an nf4"),
        ("int8", LoraConfig(), TrainerConfig(distributed="fsdp2"), "fsdp2 is not supported yet"),
    ],
)
def test_combinations_that_cannot_train_are_refused(quantize, lora, trainer, match) -> None:
    with pytest.raises(ConfigError, match=match):
        check_placement(DEMO.model_copy(update={"quantize": quantize}), lora, trainer, CPU)


def test_none_quantises_nothing(demo_dir: Path) -> None:
    base = place_base(demo_dir, DEMO, CPU)
    assert quantization_of(base) == "none" and not quantized_modules(base)
