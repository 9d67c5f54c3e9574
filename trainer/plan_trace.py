"""The memory one training step allocates, traced without memory: the step runs under PyTorch's
`FakeTensorMode` (shapes and dtypes only) while a dispatch mode counts live tensor storages.

The counter registers every storage an operator creates and forgets it when the storage is
freed (`weakref.finalize`), so its peak is what the caching allocator has to hold at once. On
CPU the traced peak equals the eager peak of the same step byte for byte
(tests/unit/test_trainer_plan.py). It traces on `cpu`: fake CUDA tensors abort under autograd.
The model is built on meta and given fake parameters by hand (PEFT's `.to()` refuses fakes).

A transformer's blocks are identical, so a full-size step is traced at 2, 3 and 4 blocks and
extrapolated when the three peaks lie exactly on a line (they do when the peak is in the
blocks); otherwise every block is traced.
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from trainer.config import LoraConfig

PROBE_LAYERS = (2, 3, 4)  # blocks traced to extrapolate a deeper transformer
# The first step a process runs allocates a few bytes once (16 on torch 2.13: a cached scalar),
# so consecutive probes may differ by that much without the blocks differing.
ONCE_SLACK = 1024
SIGMA = 0.7  # any fixed noise level: the step's shapes do not depend on it


@dataclass(frozen=True)
class StepShape:
    """Everything one step's allocations depend on (not the base's storage format: the
    quantised layers' own workspace is an analytic term of the plan)."""

    transformer: dict[str, Any]  # LTX2VideoTransformer3DModel kwargs
    connectors: dict[str, Any]  # LTX2TextConnectors kwargs
    dtype: str  # the base's load dtype (model.dtype)
    video: tuple[int, ...]  # [B, C, F, H, W] latents
    audio: tuple[int, ...] | None  # [B, C, L, M] latents, None: video only
    text_tokens: int  # padded prompt length
    fps: float
    strategy: str  # trainer.strategy
    lora: LoraConfig
    checkpointing: bool
    optimizer: str  # adamw | adamw8bit
    mixed_precision: str  # trainer.mixed_precision
    attention: str  # fused | math
    device: str  # where the step will run: cuda (foreach optimiser kernels) or cpu
    # multi_reference: each reference's [C, f, h, w] latents, in sheet order (none known: one
    # reference of the clip's shape); keyframes: interior images appended per step
    references: tuple[tuple[int, ...], ...] = ()
    keyframe_interior: int = 0


@dataclass(frozen=True)
class StepPeak:
    """Bytes allocated by one step at its peak, on top of the weights and optimiser state;
    `gradients` of them are adapter gradients live at that moment."""

    peak: int
    gradients: int
    layers: tuple[int, ...]  # blocks traced (one entry: traced whole)


class LiveStorages(TorchDispatchMode):
    """Counts the bytes of the tensor storages that operators create and that are still alive;
    keeps the peak and which storages were alive at it."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = self.peak_at = self.clock = 0
        self._ids: dict[int, int] = {}  # storage address -> registration id, while alive
        self.born: dict[int, tuple[int, int]] = {}  # id -> (clock, bytes)
        self.died: dict[int, int] = {}  # id -> clock

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _UNCOUNTED:
            return out
        inputs = {_key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and (key := _key(t)) not in inputs:
                self._register(t.untyped_storage(), key, _eager_bytes(func, args, t))
        return out

    def _register(self, storage: torch.UntypedStorage, key: int, nbytes: int | None) -> None:
        if key in self._ids:  # an output aliasing an earlier one (a view)
            return
        self.clock += 1
        nbytes = storage.nbytes() if nbytes is None else nbytes
        self._ids[key] = self.clock
        self.born[self.clock] = (self.clock, nbytes)
        self.live += nbytes
        if self.live > self.peak:
            self.peak, self.peak_at = self.live, self.clock
        weakref.finalize(storage, self._free, key, self.clock, nbytes)

    def _free(self, key: int, ident: int, nbytes: int) -> None:
        self.live -= nbytes
        self._ids.pop(key, None)
        self.clock += 1
        self.died[ident] = self.clock

    def ident(self, t: torch.Tensor) -> int | None:
        """The registration of `t`'s storage (None: it existed before counting)."""
        return self._ids.get(_key(t))

    def alive_at_peak(self, idents: list[int | None]) -> int:
        """Bytes of the given registrations that were alive when the peak was reached."""
        total = 0
        for ident in idents:
            if ident is None:
                continue
            born, nbytes = self.born[ident]
            if born <= self.peak_at < self.died.get(ident, self.clock + 1):
                total += nbytes
        return total


# `torch.tensor(...)` constants: eagerly they are made outside the dispatcher (so never seen);
# under FakeTensorMode lifting them makes a new fake storage. Skipped in both modes.
_UNCOUNTED = {torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default}


def _eager_bytes(func: Any, args: tuple, out: torch.Tensor) -> int | None:
    """Where an eager kernel's output holds more than its fake one: a reduced MSE loss keeps its
    element-wise buffer as its storage (aten's `apply_loss_reduction`), the meta kernel does not."""
    if func is torch.ops.aten.mse_loss.default and (len(args) < 3 or args[2] != 0):
        return args[0].numel() * out.element_size()
    return None


def _key(t: torch.Tensor) -> int:
    return StorageWeakRef(t.untyped_storage()).cdata


def step_peak(shape: StepShape) -> StepPeak:
    """The traced peak of one step, extrapolated over identical blocks where that is exact."""
    layers = int(shape.transformer.get("num_layers", 48))
    if layers <= max(PROBE_LAYERS):
        return replace(trace(shape), layers=(layers,))
    probes = [trace(with_layers(shape, n)) for n in PROBE_LAYERS]
    slope, grad_slope = _slope(probes, "peak"), _slope(probes, "gradients")
    if slope is None or grad_slope is None:  # the peak is not in the blocks: trace them all
        return replace(trace(shape), layers=(layers,))
    extra = layers - PROBE_LAYERS[-1]
    last = probes[-1]
    return StepPeak(last.peak + extra * slope, last.gradients + extra * grad_slope, PROBE_LAYERS)


def _slope(probes: list[StepPeak], name: str) -> int | None:
    """Bytes per block, when the probes lie on a line (within ONCE_SLACK): the last two's."""
    values = [getattr(p, name) for p in probes]
    steps = [b - a for a, b in itertools.pairwise(values)]
    return steps[-1] if max(steps) - min(steps) <= ONCE_SLACK else None


def with_layers(shape: StepShape, layers: int) -> StepShape:
    return replace(shape, transformer={**shape.transformer, "num_layers": layers})


def trace(shape: StepShape) -> StepPeak:
    """One step (forward, loss, backward, clipping, optimiser) on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    transformer, connectors = build(shape, "meta")
    fake_parameters(mode, transformer)
    fake_parameters(mode, connectors)
    with mode:
        return run_step(shape, transformer, connectors)


def build(shape: StepShape, device: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer with the adapter (as `trainer.placement.attach_adapter` adds it) and the
    frozen text connectors, on `device` (meta: no memory)."""
    from diffusers import LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    from trainer.placement import attach_adapter
    from trainer.strategies import trained_modality

    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, shape.dtype))
    try:
        with torch.device(device):
            transformer = LTX2VideoTransformer3DModel(**shape.transformer)
            connectors = LTX2TextConnectors(**shape.connectors)
    finally:
        torch.set_default_dtype(default)
    modality = trained_modality(shape.strategy, shape.audio is not None)
    attach_adapter(transformer, shape.lora, modality)
    if shape.checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    if shape.lora.kind == "lokr":
        # LoKr's module dropout branches on a random draw (fake tensors hold no value): in eval
        # mode its update is always applied, the step's largest memory either way
        for module in transformer.modules():
            if hasattr(module, "module_dropout"):
                module.eval()
    return transformer, connectors.requires_grad_(False).eval()


def fake_parameters(mode: Any, module: torch.nn.Module) -> None:
    """Replace every parameter and buffer of `module` by a fake CPU tensor of its shape."""
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                with mode:
                    fake = torch.empty(p.shape, dtype=p.dtype, device="cpu")
                sub._parameters[name] = torch.nn.Parameter(fake, requires_grad=p.requires_grad)
        for name, b in list(sub._buffers.items()):
            if b is not None:
                with mode:
                    sub._buffers[name] = torch.empty(b.shape, dtype=b.dtype, device="cpu")


def run_step(
    shape: StepShape, transformer: torch.nn.Module, connectors: torch.nn.Module
) -> StepPeak:
    """The training step of `trainer.train`, counted: its inputs are made inside the count
    (the batch is on the device during the step); the optimiser state exists before it."""
    from trainer.config import TrainerConfig
    from trainer.strategies import get_strategy

    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = _optimizer(shape, params)
    cfg = TrainerConfig(strategy=shape.strategy, keyframe_interior=shape.keyframe_interior)
    counter = LiveStorages()
    with counter, _kernels(shape.attention), _autocast(shape.mixed_precision):
        batch = make_batch(shape, transformer.dtype)
        generator = torch.Generator().manual_seed(0)
        sigma = torch.full((shape.video[0],), SIGMA)
        loss = get_strategy(shape.strategy).loss(
            {"transformer": transformer, "connectors": connectors},
            None,
            batch,
            cfg,
            generator,
            sigmas=(sigma, sigma),
        )
        loss.backward()
        del loss, batch
        grads = [counter.ident(p.grad) for p in params if p.grad is not None]
        foreach = True if shape.device == "cuda" else None  # what each device's default runs
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=foreach)
        if optimizer is not None:
            optimizer.step()
        for p in params:
            p.grad = None
    return StepPeak(counter.peak, counter.alive_at_peak(grads), ())


def make_batch(shape: StepShape, dtype: torch.dtype) -> Any:
    """A cached batch of the step's shapes: latents, left-padded text, the conditioning latents
    of the IC-LoRA and keyframe modes."""
    from trainer.data import Batch

    b = shape.video[0]
    text = {
        "prompt_features": torch.randn(b, shape.text_tokens, text_width(shape.connectors)[0]),
        "prompt_attention_mask": torch.ones(b, shape.text_tokens, dtype=torch.int64),
    }
    if shape.connectors.get("per_modality_projections"):
        audio_width = text_width(shape.connectors)[1]
        text["audio_prompt_features"] = torch.randn(b, shape.text_tokens, audio_width)
    text = {k: v.to(dtype) if v.is_floating_point() else v for k, v in text.items()}
    video = torch.randn(shape.video).to(dtype)
    audio = None if shape.audio is None else torch.randn(shape.audio).to(dtype)
    reference = video.clone() if shape.strategy == "reference_video" else None
    # the conditioning a mode's step appends (its loss refuses a batch without it): keyframes
    # their first and last images (and the cached interior ones it draws from), multi_reference
    # the sheet's references
    return Batch(
        video, audio, text, shape.fps, reference=reference, keyframes=_keyframes(shape, video),
        references=_references(shape, video),
    )  # fmt: skip


def _keyframes(shape: StepShape, video: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """First and last images [B, C, 1, H, W]; with interior keyframes the cached interior
    frames [B, C, F-2, H, W] too."""
    if shape.strategy != "keyframes":
        return None
    first = video[:, :, :1].clone()
    interior = (video[:, :, 1:-1].clone(),) if shape.keyframe_interior else ()
    return (first, first.clone(), *interior)


def _references(shape: StepShape, video: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    if shape.strategy != "multi_reference":
        return None
    if not shape.references:
        return (video.clone(),)
    b = video.shape[0]
    return tuple(torch.randn(b, *r).to(video.dtype) for r in shape.references)


def text_width(connectors: dict[str, Any]) -> tuple[int, int]:
    """Widths of the cached (video, audio) prompt features: each connector's inner width."""
    video = connectors["video_connector_num_attention_heads"]
    video *= connectors["video_connector_attention_head_dim"]
    audio = connectors["audio_connector_num_attention_heads"]
    audio *= connectors["audio_connector_attention_head_dim"]
    return video, audio


def _optimizer(shape: StepShape, params: list[torch.nn.Parameter]) -> Any:
    """AdamW with its state made beforehand (it persists between steps: the plan counts it
    apart). 8-bit AdamW (bitsandbytes, CUDA only) updates in place: its step is not traced."""
    if shape.optimizer != "adamw":
        return None
    foreach = True if shape.device == "cuda" else None
    optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=foreach)
    for p in params:
        optimizer.state[p] = {
            "step": torch.tensor(0.0),  # a constant: fake tensors can still read it
            "exp_avg": torch.zeros_like(p),
            "exp_avg_sq": torch.zeros_like(p),
        }
    return optimizer


@contextlib.contextmanager
def _kernels(attention: str) -> Iterator[None]:
    """`fused`: whatever SDPA picks (flash / memory-efficient: no score matrix is kept);
    `math`: the unfused kernel, which keeps the attention matrix for backward."""
    if attention == "math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            yield
    else:
        yield


def _autocast(mixed_precision: str) -> Any:
    if mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast("cpu", dtype=dtype)
