"""Weight-only quantisation of the frozen base (`model.quantize=int8|fp8|nf4`).

Only the Linear layers inside `transformer_blocks` are quantised: 98.1 % of the full-size 2.0
transformer's parameters, 97.7 % of 2.3's (counted on the meta device). The timestep and
caption embeddings, the adaLN modulation that scales every block, `proj_in`/`proj_out` and the
norms stay in the load dtype (0.66 / 0.82 GiB in bf16). The adapter (LoRA, DoRA, LoKr) is
attached afterwards, in the same dtype as on a float base, by PEFT's generic layers, which call
the quantised module as their `base_layer`.

One library per format, chosen by what its backward keeps (docs/training.md, "Quantised
base"; measured in tests/unit/test_trainer_quantize.py):
- int8: optimum-quanto `qint8`, one absmax scale per output row.
- fp8: optimum-quanto `qfloat8` (e4m3), one absmax scale per output row.
- nf4: bitsandbytes `Linear4bit` NF4, blocks of 64 with double-quantised scales (QLoRA's).
Neither keeps a dequantised copy of a weight for backward; torchao's int8/fp8 does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from stagekit.errors import ConfigError

Kind = Literal["none", "int8", "fp8", "nf4"]
BACKENDS: dict[str, str] = {
    "int8": "optimum-quanto 0.2.7 qint8 (per-row absmax scale)",
    "fp8": "optimum-quanto 0.2.7 qfloat8_e4m3fn (per-row absmax scale)",
    "nf4": "bitsandbytes 0.50.2 Linear4bit nf4 (blocks of 64, double-quantised scales)",
}
INSTALL = "pip install 'ltx-lora[quant]' (optimum-quanto 0.2.7, bitsandbytes 0.50.2)"
BLOCKS = "transformer_blocks."  # where the quantised Linear layers live
FP8_CAPABILITY = (8, 9)  # Ada / Hopper and later have fp8 (e4m3)


@dataclass(frozen=True)
class QuantReport:
    """What `quantize_base` did: how many Linear layers, their bytes before and after."""

    kind: str
    backend: str
    modules: int = 0
    float_bytes: int = 0  # their weights in the load dtype
    quantized_bytes: int = 0  # their quantised weights with scales

    def describe(self) -> str:
        """One line for the training log."""
        if self.kind == "none":
            return "base: not quantised"
        return (
            f"base: {self.modules} block Linear layers quantised to {self.kind} by "
            f"{self.backend}: {_size(self.float_bytes)} -> {_size(self.quantized_bytes)}"
        )


def _size(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.2f} MiB"


def check_supported(
    kind: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    setting: str = "model.quantize",
) -> None:
    """Refuse, before anything loads, a format the card or the installed library cannot run:
    fp8 on a GPU older than compute capability 8.9, a missing library, or a library that fails
    to quantise and run one small `dtype` layer (forward and backward) on `device`. Messages
    name `setting`, the config key that chose the format."""
    if kind == "none":
        return
    if kind not in BACKENDS:
        raise ConfigError(f"{setting}={kind} is not one of none, {', '.join(BACKENDS)}")
    if kind == "fp8" and device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_CAPABILITY:
            raise ConfigError(
                f"{setting}=fp8 needs a GPU with fp8 (compute capability 8.9 or later: "
                f"Ada, Hopper, Blackwell); {torch.cuda.get_device_name(device)} is "
                f"{capability[0]}.{capability[1]}: use {setting}=int8 (the same memory, "
                "a smaller error)"
            )
    try:
        _import(kind)
    except ImportError:
        raise ConfigError(
            f"{setting}={kind} needs {BACKENDS[kind].split(' (')[0]}: {INSTALL}, "
            f"or set {setting}=none"
        ) from None
    try:
        _smoke_test(kind, device, dtype)
    except Exception as e:  # whatever the library raises: said in its own words
        said = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise ConfigError(
            f"{setting}={kind}: {BACKENDS[kind]} cannot run on {device} here ({said}); "
            f"choose another {setting}"
        ) from e


def _import(kind: str) -> None:
    if kind == "nf4":
        import bitsandbytes  # noqa: F401
    else:
        import optimum.quanto  # noqa: F401


def _smoke_test(kind: str, device: torch.device, dtype: torch.dtype) -> None:
    """Quantise a 64x64 layer on `device`; one forward and backward through it. Its weights
    are not drawn: the check leaves the random state (and so the adapter's init) as it was."""
    linear = torch.nn.Linear(64, 64, device="meta", dtype=dtype).to_empty(device="cpu")
    with torch.no_grad():
        linear.weight.copy_(torch.linspace(-1, 1, 64 * 64).view(64, 64))
        linear.bias.zero_()
    layer = quantize_linear(linear, kind, device)
    x = torch.ones(2, 64, device=device, dtype=dtype, requires_grad=True)
    with torch.enable_grad():  # a caller under no_grad (preprocessing) checks the same
        layer(x).float().sum().backward()


def quantizable(name: str, module: torch.nn.Module) -> bool:
    """A Linear layer of a transformer block (not yet quantised)."""
    return type(module) is torch.nn.Linear and name.startswith(BLOCKS) and module.weight is not None


def quantize_base(
    transformer: torch.nn.Module, kind: str, device: torch.device, *, host_blocks: int = 0
) -> QuantReport:
    """Replace the block Linear layers of `transformer` by `kind`-quantised ones on `device`,
    one at a time: each layer's float weight goes to the device, is quantised there, and its
    float copies are dropped before the next, so the device never holds the float base.
    Layers of the last `host_blocks` blocks go back to the host once quantised (block swap
    streams them from there). The rest of the model is left where it is."""
    if kind == "none":
        return QuantReport("none", "")
    names = [n for n, m in transformer.named_modules() if quantizable(n, m)]
    float_bytes = quantized_bytes = 0
    for name in names:  # by name: the replaced host layer is freed at once
        on_host = swapped(transformer, name, host_blocks)
        before, after = quantize_module(transformer, name, kind, device, on_host=on_host)
        float_bytes, quantized_bytes = float_bytes + before, quantized_bytes + after
    return QuantReport(kind, BACKENDS[kind], len(names), float_bytes, quantized_bytes)


def swapped(transformer: torch.nn.Module, name: str, host_blocks: int) -> bool:
    """Whether the block layer `name` (`transformer_blocks.<i>.…`) is one of the last
    `host_blocks` blocks, which block swap streams from the host."""
    first_on_host = len(transformer.transformer_blocks) - host_blocks
    return int(name.split(".")[1]) >= first_on_host


def quantize_module(
    transformer: torch.nn.Module, name: str, kind: str, device: torch.device, *, on_host: bool
) -> tuple[int, int]:
    """Replace the Linear layer `name` of `transformer` by its `kind`-quantised copy, made on
    `device` (then moved to the host when `on_host`). Its float and quantised bytes."""
    parent, _, child = name.rpartition(".")
    owner = transformer.get_submodule(parent)
    linear = getattr(owner, child)
    float_bytes = linear.weight.numel() * linear.weight.element_size()
    quantized = quantize_linear(linear, kind, device)
    if on_host:
        quantized = quantized.to("cpu")
    quantized_bytes = stored_bytes(quantized.weight)
    setattr(owner, child, quantized)
    return float_bytes, quantized_bytes


def quantize_linear(linear: torch.nn.Linear, kind: str, device: torch.device) -> torch.nn.Linear:
    """A frozen `kind`-quantised copy of `linear` on `device` (a torch.nn.Linear subclass)."""
    if kind == "nf4":
        return _nf4_linear(linear, device)
    return _quanto_linear(linear, kind, device)


def _quanto_linear(linear: torch.nn.Linear, kind: str, device: torch.device) -> torch.nn.Linear:
    from optimum.quanto import AbsmaxOptimizer, qfloat8_e4m3fn, qint8, quantize_weight

    qtype = qint8 if kind == "int8" else qfloat8_e4m3fn
    weight = linear.weight.detach().to(device)
    scale = AbsmaxOptimizer()(weight, qtype=qtype, axis=0)
    # an all-zero row has scale 0, and quanto's 0 / 0 would store NaN (fp8) or garbage (int8):
    # any scale stores its zeros exactly
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    # optimized=False: quanto's plain tensor (dequantise, then the dense matmul) rather than its
    # Marlin fp8 layout, an inference kernel that is compiled at first use (nvcc on the machine)
    qweight = quantize_weight(weight, qtype=qtype, axis=0, scale=scale, optimized=False)
    module = _frozen_qlinear_class().qcreate(linear, weights=qtype, device="meta")  # no weight
    module.input_scale = torch.ones((), dtype=weight.dtype, device=device)  # unused (no
    module.output_scale = torch.ones((), dtype=weight.dtype, device=device)  # activation qtype)
    module.weight = torch.nn.Parameter(qweight, requires_grad=False)
    if linear.bias is not None:
        module.bias = torch.nn.Parameter(linear.bias.detach().to(device), requires_grad=False)
    return module


class _DequantizedLinear(torch.autograd.Function):
    """y = x · deq(W)ᵀ + b for a frozen quantised W, keeping only W (already stored) for backward.
    quanto's own linear also keeps the input x [B, T, in], which only W's gradient (never
    wanted here) needs: one activation per layer, the feed-forward's 4x-wide hidden state
    among them (measured in tests/unit/test_trainer_quantize.py)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        ctx.save_for_backward(weight)
        ctx.x_dtype = x.dtype
        dense = weight.dequantize()  # transient: freed when the matmul is done
        return torch.nn.functional.linear(x, dense.to(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        grad_x = grad @ weight.dequantize().to(grad.dtype)
        return grad_x.to(ctx.x_dtype), None, None


_FROZEN_QLINEAR: type | None = None


def _frozen_qlinear_class() -> type:
    """quanto's QLinear whose forward keeps nothing but its weight for backward (made once,
    on first use, so importing this module does not import quanto)."""
    global _FROZEN_QLINEAR
    if _FROZEN_QLINEAR is None:
        from optimum.quanto import QLinear

        class FrozenQLinear(QLinear):
            def forward(self, input: torch.Tensor) -> torch.Tensor:
                bias = None if self.bias is None else self.bias.to(input.dtype)
                return _DequantizedLinear.apply(input, self.weight, bias)

        _FROZEN_QLINEAR = FrozenQLinear
    return _FROZEN_QLINEAR


def _nf4_linear(linear: torch.nn.Linear, device: torch.device) -> torch.nn.Linear:
    import bitsandbytes as bnb

    module = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=linear.weight.dtype,
        compress_statistics=True,
        quant_type="nf4",
        device="meta",
    )
    # Params4bit quantises when it is moved to a device (on that device)
    module.weight = bnb.nn.Params4bit(
        linear.weight.detach(), requires_grad=False, compress_statistics=True, quant_type="nf4"
    ).to(device)
    if linear.bias is not None:
        module.bias = torch.nn.Parameter(linear.bias.detach().to(device), requires_grad=False)
    # On a CPU with AVX512-BF16, an eval-mode forward without grad repacks the weight in place
    # into an inference-only layout whose later forwards pass no gradient to the input: keep
    # one layout (a training run alternates validation and training)
    module.support_avx512bf16_for_cpu = False
    return module


def module_kind(module: torch.nn.Module) -> str | None:
    """`int8`, `fp8` or `nf4` for a layer made by `quantize_linear`, else None."""
    qtype = getattr(module, "weight_qtype", None)
    if qtype is not None:
        return {"qint8": "int8", "qfloat8_e4m3fn": "fp8"}.get(qtype.name)
    if getattr(getattr(module, "weight", None), "quant_type", None) == "nf4":
        return "nf4"
    return None


def quantized_modules(transformer: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The quantised layers by the name their plain Linear had (PEFT's `.base_layer` dropped)."""
    return {
        name.replace(".base_layer", ""): m
        for name, m in transformer.named_modules()
        if module_kind(m) is not None
    }


def quantization_of(transformer: torch.nn.Module) -> str:
    """The format the base is quantised to (`none` when it is not)."""
    kinds = {module_kind(m) for m in quantized_modules(transformer).values()}
    if len(kinds) > 1:
        raise RuntimeError(f"the base mixes quantisation formats: {sorted(kinds)}")
    return kinds.pop() if kinds else "none"


def dequantized_weight(module: torch.nn.Module) -> torch.Tensor:
    """The weight [out, in] a quantised layer computes with, in its compute dtype."""
    weight = module.weight
    if module_kind(module) == "nf4":
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state).to(module.compute_dtype)
    return weight.dequantize()


def stored_bytes(weight: torch.Tensor) -> int:
    """Bytes a (quantised) weight keeps: its data plus scales (and nested scales)."""
    if hasattr(weight, "quant_state"):  # bitsandbytes Params4bit
        state, total = weight.quant_state, weight.numel() * weight.element_size()
        total += state.absmax.numel() * state.absmax.element_size()
        if state.nested:
            total += sum(t.numel() * t.element_size() for t in (state.state2.absmax, state.offset))
        return total
    if hasattr(weight, "__tensor_flatten__"):  # quanto: _data and _scale
        names, _ = weight.__tensor_flatten__()
        return sum(stored_bytes(getattr(weight, n)) for n in names)
    return weight.numel() * weight.element_size()
