"""ltx.comfyui_math against the facts of ComfyUI's code, on hand-sized numbers (files and lines
are cited in ltx/comfyui_math.py): these are what make a ComfyUI export differ from PEFT's."""

from __future__ import annotations

import torch

from ltx.comfyui_math import modules, patched_weight

W = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # row norms 5 and 2
A = torch.tensor([[1.0, 0.0]])  # lora_A [r=1, in=2]
B = torch.tensor([[1.0], [2.0]])  # lora_B [out=2, r=1]: B @ A = [[1, 0], [2, 0]]


def test_lora_scale_is_alpha_over_rank_only_with_an_alpha_key() -> None:
    # weight_adapter/lora.py L174-177: alpha = .alpha / mat2.shape[0], else 1.0
    plain = patched_weight(W, {"lora_A.weight": A, "lora_B.weight": B})
    assert torch.equal(plain, W + B @ A)
    scaled = patched_weight(W, {"lora_A.weight": A, "lora_B.weight": B, "alpha": torch.tensor(3.0)})
    assert torch.equal(scaled, W + 3.0 * (B @ A))


def test_dora_on_the_output_axis_divides_by_the_base_row_norm() -> None:
    # base.py L67-84: dora_scale [out, 1] -> norm of the ORIGINAL weight's rows (+ float32 eps)
    scale = torch.tensor([[10.0], [10.0]])
    got = patched_weight(W, {"lora_A.weight": A, "lora_B.weight": B, "dora_scale": scale})
    calc = W + B @ A  # [[4, 4], [2, 2]]
    eps = torch.finfo(torch.float32).eps
    expected = calc * (scale / (torch.tensor([[5.0], [2.0]]) + eps))
    assert torch.allclose(got, expected, rtol=1e-7, atol=0)
    peft = calc * (scale / calc.norm(dim=1, keepdim=True))  # what PEFT computes: not the same
    assert not torch.allclose(got, peft, rtol=1e-2)


def test_dora_on_the_input_axis_divides_by_the_patched_column_norm() -> None:
    # base.py L75-81: any other dora_scale shape -> column norms of weight_calc
    scale = torch.tensor([[1.0, 1.0]])
    got = patched_weight(W, {"lora_A.weight": A, "lora_B.weight": B, "dora_scale": scale})
    calc = W + B @ A
    eps = torch.finfo(torch.float32).eps
    assert torch.allclose(got, calc / (calc.norm(dim=0, keepdim=True) + eps), rtol=1e-7, atol=0)


def test_lokr_scales_by_alpha_over_dim_only_for_a_decomposed_factor() -> None:
    # lokr.py L98-126: dim = rank of a decomposed factor; alpha / dim only then; kron(w1, w2)
    w1, w2 = torch.tensor([[2.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    alpha = torch.tensor(4.0)
    full = patched_weight(W, {"lokr_w1": w1, "lokr_w2": w2, "alpha": alpha})
    assert torch.equal(full, W + torch.kron(w1, w2))  # alpha ignored: nothing decomposed
    w2_a, w2_b = torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0, 1.0]])  # rank 1
    parts = {"lokr_w1": w1, "lokr_w2_a": w2_a, "lokr_w2_b": w2_b, "alpha": alpha}
    assert torch.equal(patched_weight(W, parts), W + 4.0 * torch.kron(w1, w2_a @ w2_b))


def test_weights_are_patched_in_float32_and_returned_in_their_dtype() -> None:
    # model_patcher.py: the stored weight is cast to float32 before calculate_weight (ComfyUI
    # rounds back stochastically; the transcription to nearest, within one bf16 ulp)
    got = patched_weight(W.bfloat16(), {"lora_A.weight": A, "lora_B.weight": B * 1e-3})
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, (W + 1e-3 * (B @ A)).bfloat16())


def test_modules_groups_entries_as_load_lora_reads_them() -> None:
    # comfy/lora.py load_lora: `{x}.alpha`, `{x}.dora_scale` beside `{x}.lora_A/B.weight`
    sd = {
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": A,
        "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": B,
        "diffusion_model.transformer_blocks.0.attn1.to_q.alpha": torch.tensor(1.0),
    }
    assert set(modules(sd)["transformer_blocks.0.attn1.to_q"]) == {
        "lora_A.weight",
        "lora_B.weight",
        "alpha",
    }
