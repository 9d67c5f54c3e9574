"""Block swap (trainer.swap) with the "host" and the "device" both the CPU: the demo
transformer (4 blocks, trained weights) trains bit for bit as without swapping, every swapped
block is resident before its forward and its recomputation, never more than the ring."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ltx.forward import predict_velocity
from stagekit.errors import ConfigError
from trainer.config import LoraConfig, TrainerConfig
from trainer.placement import attach_adapter
from trainer.swap import attach_swap
from trainer.swap_weights import Evicted, EvictedWeightError

CPU = torch.device("cpu")
STEPS = 3


@pytest.fixture(scope="module")
def demo_weights() -> dict[str, torch.Tensor]:
    from demo.model import load_weights

    return load_weights()


def denoiser(
    weights: dict[str, torch.Tensor], kind: str = "lora", checkpointing: bool = True, qtype=None
) -> dict[str, torch.nn.Module]:
    """The demo transformer (+ connectors) with a fresh adapter on every projection; its
    blocks quantised by optimum-quanto to `qtype` if given."""
    from diffusers import LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    from demo import model as demo

    parts: dict[str, Any] = {
        "transformer": LTX2VideoTransformer3DModel(**demo.TRANSFORMER_CONFIG),
        "connectors": LTX2TextConnectors(**demo.CONNECTORS_CONFIG),
    }
    for name, module in parts.items():
        prefix = f"{name}."
        module.load_state_dict(
            {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        )
        module.requires_grad_(False)
    transformer = parts["transformer"]
    if qtype == "nf4":
        nf4_blocks(transformer)
    elif qtype is not None:
        from optimum.quanto import freeze, quantize

        quantize(transformer.transformer_blocks, weights=qtype)
        freeze(transformer.transformer_blocks)
    torch.manual_seed(0)
    attach_adapter(transformer, LoraConfig(kind=kind, rank=4, alpha=4, targets="all"))
    with torch.no_grad():  # PEFT starts lora_B (LoKr w1) at zero: give the adapter an effect
        for p in transformer.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    return parts


def nf4_blocks(transformer: torch.nn.Module) -> None:
    """Every Linear in the blocks as bitsandbytes NF4 (double-quantised scales), on the CPU."""
    import bitsandbytes as bnb

    for block in transformer.transformer_blocks:
        for path, linear in list(block.named_modules()):
            if type(linear) is not torch.nn.Linear:
                continue
            nf4 = bnb.nn.Linear4bit(
                linear.in_features,
                linear.out_features,
                bias=linear.bias is not None,
                compute_dtype=torch.float32,
                quant_type="nf4",
                device="meta",
            )
            nf4.weight = bnb.nn.Params4bit(
                linear.weight.detach(), requires_grad=False, quant_type="nf4"
            ).to(CPU)
            if linear.bias is not None:
                nf4.bias = torch.nn.Parameter(linear.bias.detach(), requires_grad=False)
            nf4.support_avx512bf16_for_cpu = False  # one weight layout in eval and training
            parent, _, name = path.rpartition(".")
            setattr(block.get_submodule(parent), name, nf4)


def inputs(step: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(step)
    sigma = torch.tensor([0.2 + 0.25 * step])
    return {
        "video_latents": torch.randn(1, 16, 2, 4, 4, generator=g),
        "audio_latents": torch.randn(1, 2, 9, 4, generator=g),
        "text": {
            "prompt_features": torch.randn(1, 32, 32, generator=g),
            "prompt_attention_mask": torch.ones(1, 32, dtype=torch.int64),
        },
        "sigma_video": sigma,
        "sigma_audio": sigma,
    }


def train_steps(parts: dict[str, torch.nn.Module], steps: int = STEPS) -> list[Any]:
    """(loss, adapter gradients) of each step, AdamW in between; a no-grad forward (as
    validation makes) between steps too."""
    params = {n: p for n, p in parts["transformer"].named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(params.values(), lr=1e-2)
    out = []
    for step in range(steps):
        video, audio = predict_velocity(parts, **inputs(step), fps=24.0)
        loss = video.square().mean() + audio.square().mean()
        loss.backward()
        out.append((loss.detach(), {n: p.grad.clone() for n, p in params.items()}))
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            out.append(predict_velocity(parts, **inputs(10 + step), fps=24.0)[0])
    return out


def assert_identical(a: list[Any], b: list[Any]) -> None:
    for x, y in zip(a, b, strict=True):
        if isinstance(x, tuple):
            assert torch.equal(x[0], y[0]), "losses differ"
            assert x[1].keys() == y[1].keys()
            assert all(torch.equal(x[1][k], y[1][k]) for k in x[1]), "gradients differ"
        else:
            assert torch.equal(x, y), "no-grad outputs differ"


@pytest.fixture(scope="module")
def baseline(demo_weights) -> list[Any]:
    return train_steps(denoiser(demo_weights))


@pytest.mark.parametrize("count", [1, 3])
def test_swapped_training_is_bit_identical(demo_weights, baseline, count: int) -> None:
    parts = denoiser(demo_weights)
    swap = attach_swap(parts["transformer"], count, CPU, CPU)
    assert swap is not None and swap.blocks == list(range(4 - count, 4))
    assert_identical(train_steps(parts), baseline)


@pytest.mark.parametrize("kind", ["dora", "lokr"])
def test_dora_and_lokr_train_bit_identically(demo_weights, kind: str) -> None:
    plain = train_steps(denoiser(demo_weights, kind), steps=1)
    parts = denoiser(demo_weights, kind)
    attach_swap(parts["transformer"], 3, CPU, CPU)
    assert_identical(train_steps(parts, steps=1), plain)


@pytest.mark.parametrize("ring", [2, 3])
def test_residency_record(demo_weights, ring: int) -> None:
    parts = denoiser(demo_weights)
    swap = attach_swap(parts["transformer"], 4, CPU, CPU, ring=ring)
    assert swap.resident == tuple(range(ring))  # preloaded for the first forward
    swap.record.clear()
    for step in range(2):
        video, audio = predict_velocity(parts, **inputs(step), fps=24.0)
        (video.square().mean() + audio.square().mean()).backward()
    uses = [(r.event, r.block) for r in swap.record if r.event in ("forward", "backward")]
    one_step = [("forward", b) for b in range(4)] + [("backward", b) for b in (3, 2, 1, 0)]
    assert uses == one_step * 2  # each block before its forward and its recomputation
    assert all(r.block in r.resident for r in swap.record if r.event != "evict")
    assert max(len(r.resident) for r in swap.record) == ring
    assert swap.misses == 0  # every block was prefetched before it was needed
    # the last blocks of the forward are still there for backward, the first for the next step
    assert sum(r.event == "load" for r in swap.record) == 2 * 2 * (4 - ring)


def test_eviction_leaves_a_placeholder_that_raises(demo_weights) -> None:
    parts = denoiser(demo_weights)
    transformer = parts["transformer"]
    attach_swap(transformer, 3, CPU, CPU)
    evicted = transformer.transformer_blocks[3]  # the ring holds blocks 1 and 2
    linear = evicted.ff.net[2].base_layer  # the frozen Linear under the adapter
    assert isinstance(linear.weight, Evicted) and isinstance(linear.bias, Evicted)
    assert linear.weight.numel() == 0 and linear.weight.is_meta
    assert "ff.net.2.base_layer.weight" not in dict(evicted.named_parameters())
    with pytest.raises(EvictedWeightError, match=r"transformer_blocks\.3\.ff\.net\.2\.base_layer"):
        linear(torch.randn(1, 256))
    with pytest.raises(EvictedWeightError, match=r"transformer_blocks\.3\.attn1\.to_q"):
        torch.nn.functional.linear(torch.randn(1, 64), evicted.attn1.to_q.base_layer.weight)
    # what stays resident: the adapter, norms and scale-shift tables
    assert evicted.attn1.to_q.lora_A["default"].weight.numel() > 0
    assert evicted.scale_shift_table.numel() > 0 and evicted.attn1.norm_q.weight.numel() > 0


def test_close_puts_every_weight_back(demo_weights) -> None:
    ref = denoiser(demo_weights)
    parts = denoiser(demo_weights)
    swap = attach_swap(parts["transformer"], 3, CPU, CPU)
    swap.close()
    names = {n for n, _ in parts["transformer"].named_parameters()}
    assert names == {n for n, _ in ref["transformer"].named_parameters()}
    with torch.no_grad():
        got = predict_velocity(parts, **inputs(0), fps=24.0)[0]
        assert torch.equal(got, predict_velocity(ref, **inputs(0), fps=24.0)[0])


def test_quanto_weights_stream_in_their_quantised_form(demo_weights) -> None:
    from optimum.quanto import qint8

    plain = train_steps(denoiser(demo_weights, qtype=qint8), steps=1)
    parts = denoiser(demo_weights, qtype=qint8)
    swap = attach_swap(parts["transformer"], 3, CPU, CPU)
    resident = parts["transformer"].transformer_blocks[1].ff.net[2].base_layer.weight
    assert type(resident).__name__ == "WeightQBytesTensor" and resident._data.dtype == torch.int8
    assert_identical(train_steps(parts, steps=1), plain)
    # int8 data, float32 scales and biases, each aligned to 512 B: 0.36 of the float32 block
    # at the demo's widths, -> 0.25 at full size
    assert swap.buffer_bytes < 0.4 * _float_block_bytes(demo_weights)


def test_bitsandbytes_nf4_weights_stream_packed(demo_weights) -> None:
    plain = train_steps(denoiser(demo_weights, qtype="nf4"), steps=1)
    parts = denoiser(demo_weights, qtype="nf4")
    swap = attach_swap(parts["transformer"], 3, CPU, CPU)
    resident = parts["transformer"].transformer_blocks[1].ff.net[2].base_layer.weight
    assert type(resident).__name__ == "Params4bit" and resident.dtype == torch.uint8
    assert resident.quant_state.absmax.dtype == torch.uint8  # double-quantised block scales
    assert_identical(train_steps(parts, steps=1), plain)
    # packed 4-bit data and uint8 block scales (+ float32 biases, 512 B alignment)
    assert swap.buffer_bytes < 0.25 * _float_block_bytes(demo_weights)


def _float_block_bytes(weights: dict[str, torch.Tensor]) -> int:
    parts = denoiser(weights)
    return attach_swap(parts["transformer"], 1, CPU, CPU).buffer_bytes


def test_bitsandbytes_weights_are_refused(demo_weights) -> None:
    import bitsandbytes as bnb

    parts = denoiser(demo_weights)
    block = parts["transformer"].transformer_blocks[3]
    block.ff.net[2] = bnb.nn.Linear8bitLt(256, 64, has_fp16_weights=False).requires_grad_(False)
    with pytest.raises(ConfigError, match=r"transformer_blocks\.3\.ff\.net\.2\.weight.*Int8Params"):
        attach_swap(parts["transformer"], 1, CPU, CPU)


def test_refusals(demo_weights) -> None:
    parts = denoiser(demo_weights)
    with pytest.raises(ConfigError, match="transformer has 4 blocks: use 0 to 4"):
        attach_swap(parts["transformer"], 5, CPU, CPU)
    with pytest.raises(ConfigError, match="resolved by the memory plan against a GPU"):
        attach_swap(parts["transformer"], "auto", CPU, CPU)
    assert attach_swap(parts["transformer"], 0, CPU, CPU) is None
    unchecked = denoiser(demo_weights, checkpointing=False)
    with pytest.raises(ConfigError, match=r"needs trainer\.gradient_checkpointing=true"):
        attach_swap(unchecked["transformer"], 1, CPU, CPU)
    # checkpointing turned off afterwards: the first swapped block refuses to run with grads
    attach_swap(parts["transformer"], 1, CPU, CPU)
    parts["transformer"].disable_gradient_checkpointing()
    with pytest.raises(RuntimeError, match="block swap needs gradient checkpointing"):
        predict_velocity(parts, **inputs(0), fps=24.0)


def test_config_refuses_swap_without_checkpointing() -> None:
    from pydantic import ValidationError

    assert TrainerConfig(blocks_to_swap=2, gradient_checkpointing=True).blocks_to_swap == 2
    assert (
        TrainerConfig(blocks_to_swap="auto", gradient_checkpointing=True).blocks_to_swap == "auto"
    )
    with pytest.raises(ValidationError, match=r"needs trainer\.gradient_checkpointing=true"):
        TrainerConfig(blocks_to_swap=2)
    with pytest.raises(ValidationError, match="fsdp2 both place the base"):
        TrainerConfig(blocks_to_swap=2, gradient_checkpointing=True, distributed="fsdp2")
    with pytest.raises(ValidationError):
        TrainerConfig(blocks_to_swap=-1, gradient_checkpointing=True)
