"""bench/gpu_transformer.py: refuses cleanly without a GPU; its workload has the real shapes and
runs end to end (inputs, LoRA step, FLOP count) at tiny size on CPU."""

from __future__ import annotations

import pytest
import torch

from bench import gpu_transformer as gpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the bench runs")
def test_without_a_gpu_it_says_so_and_exits_2(capsys) -> None:
    assert gpu.main(["--steps", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "needs a CUDA GPU" in captured.err and "nothing was measured" in captured.err


def test_full_size_workload_has_the_real_shapes() -> None:
    shapes = gpu.FULL.shapes()
    assert shapes["video"] == (1, 128, 16, 16, 24)  # 121 frames /8 +1, 512/32, 768/32
    assert shapes["audio"] == (1, 8, 126, 16)  # 121/24 s x 25 latents/s, 64 mel bins / 4
    assert shapes["text"] == (1, 1024, 3840)
    assert gpu.FULL.rank == 32 and gpu.FULL.transformer == {"rope_type": "split"}


@pytest.mark.parametrize("version", ["2.0", "2.3", "2.5"])
def test_tiny_workload_trains_one_step_and_counts_its_flops(version: str) -> None:
    w = gpu.tiny(version)
    model = gpu.build_transformer(w, "cpu", torch.float32)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n, p in model.named_parameters() if p.requires_grad)
    inputs = gpu.make_inputs(w, model, "cpu")
    c, f, h, wd = w.shapes()["video"][1:]
    assert inputs["hidden_states"].shape == (1, f * h * wd, c)  # [B, F*H*W, C], patch 1
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    loss = gpu.train_step(model, inputs, optimizer)
    assert loss > 0 and any(not torch.equal(a, b) for a, b in zip(before, trainable, strict=True))
    flops = gpu.count_flops(w)
    # more than the forward's 2 FLOPs per base weight for one token
    base = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert flops > 2 * base


@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_full_size_2_3_and_2_5_workloads_feed_their_transformer(version: str) -> None:
    """On the meta device: the version's 22 B transformer takes the inputs as built (text of
    the connectors' widths, 2.5's keyframe marker on the first latent frame's 384 tokens)."""
    w = gpu.full(version)
    assert w.shapes()["text"] == (1, 1024, 4096) and w.shapes()["audio_text"] == (1, 1024, 2048)
    model = gpu.build_transformer(w, "meta", torch.bfloat16)
    inputs = gpu.make_inputs(w, model, "meta")
    assert ("video_keyframes_mask" in inputs) == (version == "2.5")
    if version == "2.5":
        assert inputs["video_keyframes_mask"].shape == (1, 16 * 16 * 24, 1)
    video_out, audio_out = model(**inputs)
    assert video_out.shape == inputs["hidden_states"].shape
    assert audio_out.shape == inputs["audio_hidden_states"].shape


def test_mfu_peaks_are_known_for_the_usual_gpus() -> None:
    assert gpu.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert gpu.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu.peak_flops("Some Future GPU") is None
