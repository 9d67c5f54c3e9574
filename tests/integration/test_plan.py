"""The memory plan against measurement and through the CLI.

- Predicted peak RSS of CPU training steps within 15 % of the measured peak (each in its own
  process, its VmHWM), over the demo model and a wider tiny one, with and without
  checkpointing, block swap and a quantised base (int8, nf4). The processes run with glibc's
  mmap threshold fixed (MALLOC_MMAP_THRESHOLD_): by default glibc raises it as blocks are
  freed and keeps freed activations in its heap (measured here: up to ~2x the step's peak),
  which the plan does not model; with it fixed, RSS tracks the live memory the plan predicts.
- `ltx-lora plan model=ltx2|ltx2_3 --gpu 24GB` at 121x512x768 with audio names a fitting
  config, from the versions' full-size configs (no weight file anywhere). Tracing a full-size
  step takes ~10 s (3 probe depths, extrapolated to 48 blocks).
- A run that will not fit is refused before anything loads (tests/unit/test_trainer_plan.py
  checks the knob it names at full size).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ltx.config import ModelConfig
from stagekit.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30
# wider and deeper than the tiny model, so its weights (0.16 GiB) are a real share of the peak
WIDE = {"attention_head_dim": 384, "cross_attention_dim": 768, "num_layers": 4}  # 2 heads


def rss_job(
    model: str, source: str, clip: str, checkpointing: bool, swap: int, quantize: str = "none"
) -> None:
    """In its own process: plan one CPU training step, then run two as `train` does (place the
    base, adapter, checkpointing, block swap, AdamW) and print predicted and measured peak RSS."""
    import torch

    torch.set_num_threads(1)
    from ltx.loading import load_components
    from trainer.config import LoraConfig, TrainerConfig
    from trainer.placement import attach_adapter, place_base
    from trainer.plan import make_plan, make_setup
    from trainer.plan_sizes import latents_for_clip, model_configs
    from trainer.plan_trace import make_batch
    from trainer.runtime import make_optimizer
    from trainer.strategies import get_strategy
    from trainer.swap import attach_swap

    path, model_cfg = Path(model), ModelConfig(name=source, source=source, quantize=quantize)
    lora = LoraConfig(rank=16, alpha=16, targets="all")
    cfg = TrainerConfig(gradient_checkpointing=checkpointing, blocks_to_swap=swap)
    configs = model_configs(model_cfg, path)
    frames, height, width = (int(v) for v in clip.split("x"))
    latents = latents_for_clip(model_cfg, configs["transformer"], frames, height, width, 24, True)
    setup = make_setup(model_cfg, lora, cfg, configs, latents, "cpu")
    plan = make_plan(setup)

    transformer = place_base(path, model_cfg, torch.device("cpu"), host_blocks=swap)
    connectors = load_components(path, ["connectors"], model_cfg.dtype)["connectors"]
    denoiser = {"transformer": transformer, "connectors": connectors.requires_grad_(False)}
    params = list(attach_adapter(transformer, lora).values())
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    attach_swap(transformer, swap, "cpu", "cpu")
    optimizer = make_optimizer(params, cfg, torch.device("cpu"))
    strategy, generator = get_strategy(cfg.strategy), torch.Generator().manual_seed(0)
    transformer.train()
    for _ in range(2):  # the second has the optimiser state
        batch = make_batch(setup.step, transformer.dtype)
        sigma = torch.rand(1, generator=generator)
        strategy.loss(denoiser, None, batch, cfg, generator, sigmas=(sigma, sigma)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    print(json.dumps({"predicted": plan.host_total, "measured": peak_rss(), "host": plan.host}))


def peak_rss() -> int:
    """This process's peak RSS (VmHWM). Not `ru_maxrss`: Linux folds the RSS of the image a
    process replaced at exec (here the forked pytest process, ~0.7 GiB) into it."""
    status = Path("/proc/self/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kib) * 1024


def _run_job(args: tuple) -> dict:
    code = f"from tests.integration.test_plan import rss_job; rss_job{args!r}"
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The demo model's folder and a wider tiny model's (random weights, 4 blocks)."""
    from diffusers import LTX2VideoTransformer3DModel

    from ltx import tiny
    from ltx.loading import ensure_model

    root = tmp_path_factory.mktemp("models")
    demo = ensure_model(ModelConfig(name="demo", source="demo"), root)
    tiny_dir = ensure_model(ModelConfig(name="tiny", source="tiny"), root)
    wide = root / "wide"
    shutil.copytree(tiny_dir, wide)
    shutil.rmtree(wide / "transformer")
    config = {**tiny.transformer_config(), **WIDE}
    LTX2VideoTransformer3DModel(**config).save_pretrained(wide / "transformer")
    return {"demo": demo, "wide": wide}


CONFIGS = [  # (model, source, clip, checkpointing, blocks swapped[, model.quantize])
    ("demo", "demo", "9x256x512", False, 0),
    ("wide", "tiny", "9x64x128", True, 2),
    ("wide", "tiny", "9x64x128", True, 0, "int8"),
    ("wide", "tiny", "9x64x128", True, 2, "nf4"),
]


def test_predicted_peak_rss_is_within_15_percent(models) -> None:
    jobs = [(str(models[m]), *rest) for m, *rest in CONFIGS]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(_run_job, jobs))
    report = []
    for job, r in zip(CONFIGS, results, strict=True):
        ratio = r["predicted"] / r["measured"]
        report.append(
            f"{job}: predicted {r['predicted'] / GIB:.3f} GiB, measured "
            f"{r['measured'] / GIB:.3f} GiB ({ratio - 1:+.1%}); "
            + ", ".join(f"{k} {v / GIB:.3f}" for k, v in r["host"].items())
        )
    print("\n".join(report))
    for line, r in zip(report, results, strict=True):
        assert abs(r["predicted"] / r["measured"] - 1) <= 0.15, line


def _plan_cli(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ltx_lora.cli", "--workspace", str(workspace), "plan", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)


def test_plan_cli_names_a_fitting_config_for_2_0_and_2_3(tmp_path) -> None:
    """Both versions planned at once (two processes): ~30 s, most of it the traces of the
    step with and without checkpointing (the default config has it off)."""
    workspace, gpu = tmp_path, "24GB"
    runs = {
        model: (workspace, f"model={model}", "--gpu", gpu, "--clip", "121x512x768")
        for model in ("ltx2", "ltx2_3")
    }
    with ThreadPoolExecutor(2) as pool:
        outs = dict(zip(runs, pool.map(lambda a: _plan_cli(*a), runs.values()), strict=True))
    for model, out in outs.items():
        assert out.returncode == 0, out.stderr[-3000:]
        text = out.stdout
        print(f"$ ltx-lora plan model={model} --gpu {gpu} --clip 121x512x768\n{text}")
        assert "121x512x768 @ 24 fps with audio" in text
        assert "(planned, not measured)" in text
        assert "settings that fit, fastest first" in text
        fits = text.split("settings that fit, fastest first")[1].splitlines()[1:]
        assert any(
            "GPU" in line and float(line.split("GPU")[1].split()[0]) <= int(gpu[:2])
            for line in fits
        )


def test_train_refuses_before_loading(models, tmp_path, monkeypatch) -> None:
    """`train` plans first: on a card too small for the run it stops with one line, before a
    checkpoint folder or any weight exists."""
    import torch
    from safetensors.torch import save_file

    import trainer.placement
    import trainer.plan
    import trainer.plan_report
    import trainer.train
    from tests.integration.train_job import LINEAGE
    from trainer.cache import model_identity
    from trainer.config import LoraConfig, TrainerConfig

    tiny_dir = next(p for p in models["wide"].parent.iterdir() if p.name.startswith("tiny"))
    cache = tmp_path / "cache"
    cache.mkdir()
    save_file(
        {"video": torch.zeros(8, 5, 8, 12), "text_length": torch.tensor([128])},
        cache / "c.safetensors",
    )
    entry = {"file": "c.safetensors", "sha256": "0" * 64, "bucket": [96, 64, 9], "fps": 24.0}
    index = {"identity": model_identity(tiny_dir, "2.0"), "entries": {"c": entry}}
    (cache / "index.json").write_text(json.dumps(index))

    def loaded(*args, **kwargs):
        raise AssertionError("a weight was loaded before the plan refused the run")

    card = trainer.plan_report.Card("a 256 MiB card", 256 << 20)  # below the CUDA context alone
    monkeypatch.setattr(trainer.plan, "detected_card", lambda: card)
    monkeypatch.setattr(trainer.placement, "place_base", loaded)
    with pytest.raises(UserError, match=r"will not fit a 256 MiB card.*no setting fits"):
        trainer.train.train(
            cache,
            tmp_path / "train",
            tiny_dir,
            ModelConfig(name="ltx2-tiny", source="tiny"),
            LoraConfig(rank=4),
            TrainerConfig(max_steps=2),
            seed=0,
            trigger="zorblat",
            lineage=LINEAGE,
            resolved_config={},
            checkpoint_root=tmp_path / "ckpt",
        )
    assert not (tmp_path / "ckpt").exists()
