"""Generate audio-video clips with `LTX2Pipeline`, with or without a LoRA adapter, and write
or read them as mp4 (h264 yuv420p + AAC) with PyAV."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltx.buckets import PIPELINE_SIDE_MULTIPLE
from stagekit.errors import UserError
from stagekit.files import atomic_path

EVAL_ADAPTER = "ltx_lora_eval"
MAX_TEXT_TOKENS = 1024  # LTX-2's prompt length; tokenizers with a smaller max use theirs
Condition = tuple[np.ndarray, int]  # a uint8 [H, W, 3] image and the latent index it goes to
# IC-LoRA references: uint8 [F, H, W, 3] videos (a still: F = 1), one or a list (a reference
# sheet, appended in order), and their downscale factor
Reference = tuple[np.ndarray | list[np.ndarray], int]


@dataclass
class Clip:
    """One generated or decoded clip: `video` uint8 [F, H, W, 3]; `audio` float32 [C, N]."""

    video: np.ndarray
    fps: float
    audio: np.ndarray | None = None
    sample_rate: int | None = None


def text_max_length(pipe_or_tokenizer: Any) -> int:
    """Prompt length (tokens) used for both sampling and training: min(1024, tokenizer max)."""
    tok = getattr(pipe_or_tokenizer, "tokenizer", pipe_or_tokenizer)
    return int(min(MAX_TEXT_TOKENS, tok.model_max_length))


def use_cross_timestep(transformer: Any) -> bool:
    """LTX-2.3+ (cross-attention modulation) conditions a2v/v2a on the other stream's sigma;
    LTX-2.0 on its own. Training and sampling both use this so they agree."""
    cfg = transformer.config
    return bool(cfg.get("cross_attn_mod", False) or cfg.get("audio_cross_attn_mod", False))


def guidance_kwargs(pipe: Any, guidance_scale: float) -> dict[str, Any]:
    """Plain CFG on both streams: STG, modality guidance and rescaling off (the 0.42.1
    defaults turn them on and assume a 48-block model)."""
    return {
        "guidance_scale": guidance_scale,
        "audio_guidance_scale": guidance_scale,
        "stg_scale": 0.0,
        "audio_stg_scale": 0.0,
        "spatio_temporal_guidance_blocks": None,
        "modality_scale": 1.0,
        "audio_modality_scale": 1.0,
        "guidance_rescale": 0.0,
        "audio_guidance_rescale": 0.0,
        "use_cross_timestep": use_cross_timestep(pipe.transformer),
    }


def generate(
    pipe: Any,
    prompts: list[str],
    seeds: list[int],
    *,
    width: int,
    height: int,
    frames: int,
    fps: float,
    steps: int,
    guidance_scale: float,
    adapter: Path | None = None,
    adapter_scale: float = 1.0,
    negative_prompt: str = "",
    conditions: list[Condition] | None = None,
    reference: Reference | None = None,
) -> list[Clip]:
    """One clip per (prompt, seed), prompt-major; each is deterministic given its seed.
    `conditions`: images to condition on, each at a latent index (0: the first frame, -1: the
    last), sampled by diffusers' LTX2ConditionPipeline on the same components; `reference`: an
    IC-LoRA reference video (or a list: a reference sheet) and its downscale factor, by
    LTX2InContextPipeline."""
    from ltx.keyframes import marked_first_frame

    _check_size(pipe, width, height, frames)
    with adapter_applied(pipe, adapter, adapter_scale), marked_first_frame(pipe.transformer):
        if reference is not None:
            runner, extra = _in_context(pipe, reference)
        elif conditions:
            runner, extra = _conditioned(pipe, conditions)
        else:
            runner, extra = pipe, {}
        return [
            _generate_one(
                runner, p, s, width, height, frames, fps, steps, guidance_scale, negative_prompt,
                **extra,
            )
            for p in prompts
            for s in seeds
        ]  # fmt: skip


def _conditioned(pipe: Any, conditions: list[Condition]) -> tuple[Any, dict[str, Any]]:
    """The condition pipeline over `pipe`'s own components (the adapter and the marker hook
    included), and its `conditions` argument."""
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import (
        LTX2ConditionPipeline,
        LTX2VideoCondition,
    )

    made = [LTX2VideoCondition(frames=image, index=index) for image, index in conditions]
    return _over(pipe, LTX2ConditionPipeline), {"conditions": made}


def _in_context(pipe: Any, reference: Reference) -> tuple[Any, dict[str, Any]]:
    """The IC-LoRA pipeline over `pipe`'s components, and its reference arguments."""
    from diffusers import LTX2InContextPipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition

    videos, factor = reference
    videos = [videos] if isinstance(videos, np.ndarray) else list(videos)
    # float [0, 1]: diffusers 0.42.1's `preprocess_video` scales numpy frames as such (uint8
    # frames would land in [-1, 509]: tests/unit/test_multi_reference_layout.py)
    made = [LTX2ReferenceCondition(frames=v.astype(np.float32) / 255) for v in videos]
    extra = {"reference_conditions": made, "reference_downscale_factor": factor}
    return _over(pipe, LTX2InContextPipeline), extra


def _over(pipe: Any, cls: type) -> Any:
    """A `cls` pipeline sharing `pipe`'s components (the live adapter, the marker hook)."""
    import inspect

    wanted = inspect.signature(cls.__init__).parameters
    runner = cls(**{k: v for k, v in pipe.components.items() if k in wanted})
    if hasattr(pipe, "ltx_sigmas"):
        runner.ltx_sigmas = pipe.ltx_sigmas
    runner.set_progress_bar_config(disable=True)
    return runner


def _check_size(pipe: Any, width: int, height: int, frames: int) -> None:
    # The pipeline would silently return (frames-1)//t*t+1 frames; say so instead.
    t = pipe.vae_temporal_compression_ratio
    if (
        frames < 1
        or (frames - 1) % t
        or width % PIPELINE_SIDE_MULTIPLE
        or height % PIPELINE_SIDE_MULTIPLE
    ):
        raise UserError(
            f"cannot sample {width}x{height}x{frames}: frames must be {t}k+1 and sides multiples "
            f"of {PIPELINE_SIDE_MULTIPLE} (see ltx.buckets.bucket_rules)"
        )


def _generate_one(
    pipe: Any,
    prompt: str,
    seed: int,
    width: int,
    height: int,
    frames: int,
    fps: float,
    steps: int,
    guidance_scale: float,
    negative_prompt: str,
    **extra: Any,
) -> Clip:
    # A CPU generator gives the same noise on any device, so a seed means the same clip.
    generator = torch.Generator("cpu").manual_seed(seed)
    sigmas = getattr(pipe, "ltx_sigmas", None)  # a distilled base: its fixed schedule, no CFG
    if sigmas is not None:
        steps, guidance_scale = len(sigmas), 1.0
    video, audio = pipe(
        prompt=prompt,
        negative_prompt=negative_prompt,
        width=width,
        height=height,
        num_frames=frames,
        frame_rate=fps,
        num_inference_steps=steps,
        sigmas=sigmas,
        generator=generator,
        max_sequence_length=text_max_length(pipe),
        output_type="np",
        return_dict=False,
        **guidance_kwargs(pipe, guidance_scale),
        **extra,
    )
    pixels = np.clip(np.rint(np.asarray(video[0]) * 255.0), 0, 255).astype(np.uint8)
    wave = audio[0].detach().float().cpu().numpy().astype(np.float32)
    return Clip(pixels, float(fps), wave, int(pipe.vocoder.config.output_sampling_rate))


@contextmanager
def adapter_applied(pipe: Any, adapter: Path | None, scale: float = 1.0) -> Iterator[None]:
    """Load a LoRA file into `pipe` for the block, then restore the pipeline exactly."""
    if adapter is None:
        yield
        return
    from ltx.lora import load_adapter_file

    had_lora = bool(getattr(pipe.transformer, "peft_config", None))
    previous = pipe.transformer.active_adapters() if had_lora else []
    with _quiet_peft():  # a second adapter beside a training one is intended here
        pipe.load_lora_weights(load_adapter_file(Path(adapter)), adapter_name=EVAL_ADAPTER)
    pipe.set_adapters([EVAL_ADAPTER], adapter_weights=[scale])
    try:
        yield
    finally:
        if had_lora:
            with _quiet_peft():
                pipe.delete_adapters(EVAL_ADAPTER)
            pipe.transformer.set_adapters(previous)
        else:
            # No adapter before: remove the LoRA layers entirely, back to the plain modules.
            pipe.unload_lora_weights()


@contextmanager
def _quiet_peft() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*peft_config.*multiple adapters")
        warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
        yield


def write_clip(path: Path, clip: Clip, crf: int = 18) -> None:
    """Write `clip` as mp4: h264 yuv420p video (+ AAC audio when present), atomically."""
    import av

    _, height, width, _ = clip.video.shape
    with atomic_path(Path(path)) as tmp, av.open(str(tmp), mode="w", format="mp4") as out:
        vstream = out.add_stream("libx264", rate=Fraction(clip.fps).limit_denominator(1000))
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.options = {"crf": str(crf)}
        astream = _add_audio_stream(out, clip)
        for frame in clip.video:
            out.mux(vstream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(vstream.encode())
        if astream is not None:
            _encode_audio(out, astream, clip)


def _add_audio_stream(out: Any, clip: Clip) -> Any:
    if clip.audio is None or clip.audio.size == 0:
        return None
    channels = clip.audio.shape[0]
    stream = out.add_stream("aac", rate=int(clip.sample_rate))
    stream.layout = "stereo" if channels == 2 else "mono"
    return stream


def _encode_audio(out: Any, stream: Any, clip: Clip) -> None:
    import av

    layout = "stereo" if clip.audio.shape[0] == 2 else "mono"
    wave = np.ascontiguousarray(np.clip(clip.audio, -1.0, 1.0).astype(np.float32))
    frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout=layout)
    frame.sample_rate = int(clip.sample_rate)
    frame.pts = 0
    out.mux(stream.encode(frame))
    out.mux(stream.encode())


def read_clip(path: Path) -> Clip:
    """Decode an mp4 into a Clip (video as RGB uint8; audio as float32 [C, N] when present)."""
    import av

    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate or vstream.guessed_rate)
        video = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(vstream)])
    audio, rate = read_audio(path)
    return Clip(video, fps, audio, rate)


def read_audio(path: Path) -> tuple[np.ndarray | None, int | None]:
    """The first audio stream as float32 [C, N] and its rate; (None, None) without audio."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None, None
        astream = container.streams.audio[0]
        # Planar float whatever the codec stores, so the array is [channels, samples].
        resampler = av.AudioResampler(format="fltp", layout=astream.layout.name)
        chunks = [r.to_ndarray() for f in container.decode(astream) for r in resampler.resample(f)]
        chunks += [r.to_ndarray() for r in resampler.resample(None)]
        rate = int(astream.rate)
        # AAC pads its last frame; the stream duration says how many samples are real.
        n = round(astream.duration * astream.time_base * rate) if astream.duration else None
    audio = np.concatenate(chunks, axis=1).astype(np.float32) if chunks else None
    return (audio[:, :n] if audio is not None and n else audio), rate
