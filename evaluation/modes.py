"""Which training mode an adapter is evaluated in, and what that mode conditions on.

The mode decides how base and adapter are rendered (text alone, a first frame, first and last
frames, a reference clip) and which scores apply (audio metrics for modes with audio). It is
read from the adapter: a `strategy` key in its safetensors header where the trainer writes one,
else `params.strategy` of the run's `train.json` beside it (`<run>/adapter/adapter.safetensors`
→ `<run>/train.json`); `evaluation.mode` overrides both. An adapter that says nothing (hand-made,
third-party) is evaluated text-to-video, and metrics.json says where the mode came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stagekit.errors import UserError

MODES = (
    "text_to_video",
    "audio_video",
    "text_to_audio",
    "image_to_video",
    "keyframes",
    "reference_video",
    "multi_reference",
)
# rendered with conditioning from held-out clips (evaluation/conditioning.py)
CONDITIONED = ("image_to_video", "keyframes", "reference_video", "multi_reference")
WITH_AUDIO = ("audio_video", "text_to_audio")  # scored on their audio too
# a mode the trainer knows that evaluation cannot yet render as it is used: refused, because
# scoring it another way would judge another model (mode → why)
NOT_YET: dict[str, str] = {}


@dataclass(frozen=True)
class Mode:
    """The mode an adapter is evaluated in, where that was read, and the IC-LoRA scale."""

    name: str  # one of MODES
    source: str  # "evaluation.mode", "adapter header", "train.json", or "default"
    reference_downscale_factor: int = 1  # reference_video: the reference at 1/N of the render

    @property
    def conditioned(self) -> bool:
        return self.name in CONDITIONED

    @property
    def has_audio(self) -> bool:
        return self.name in WITH_AUDIO


def adapter_mode(adapter: Path, override: str = "auto") -> Mode:
    """The mode to evaluate `adapter` in: `override` unless "auto", else what the adapter says.
    Refuses a mode this evaluation cannot yet render faithfully."""
    from evaluation.adapters import adapter_header

    header = adapter_header(adapter)
    record = _train_record(adapter)
    factor = int(
        header.get("reference_downscale_factor") or record.get("reference_downscale_factor") or 1
    )
    if override != "auto":
        name, source = override, "evaluation.mode"
    elif header.get("strategy"):
        name, source = header["strategy"], "adapter header"
    elif record.get("strategy"):
        name, source = record["strategy"], "train.json"
    else:
        name, source = "text_to_video", "default"
    if name == "audio_video" and source != "evaluation.mode" and not _writes_audio(adapter):
        # the trainer puts no adapter on audio modules when the cache has no audio: such a run
        # trained video alone, and an audio rule would fail it for sound it never learned
        name, source = "text_to_video", f"{source}: audio_video without audio modules"
    return _checked(Mode(name, source, factor))


def _writes_audio(adapter: Path) -> bool:
    """Whether any of the adapter's keys sits on a module that writes into the audio stream."""
    import re

    from safetensors import safe_open

    from ltx.lora import AUDIO_WRITERS

    with safe_open(str(adapter), framework="np") as f:
        return any(re.match(AUDIO_WRITERS, key) for key in f.keys())  # noqa: SIM118


def _train_record(adapter: Path) -> dict[str, str]:
    """`params` of the train.json written beside the adapter's folder (or in it); {} if none."""
    for folder in (adapter.parent.parent, adapter.parent):
        path = folder / "train.json"
        if path.is_file():
            try:
                return dict(json.loads(path.read_text()).get("params") or {})
            except (json.JSONDecodeError, AttributeError):
                return {}
    return {}


def _checked(mode: Mode) -> Mode:
    if mode.name not in MODES:
        raise UserError(
            f"the adapter was trained in mode {mode.name!r} ({mode.source}), which evaluation "
            f"does not know: set evaluation.mode to one of {', '.join(MODES)}"
        )
    if mode.name in NOT_YET:
        raise UserError(
            f"adapters trained with trainer.strategy={mode.name} are not yet evaluated "
            f"({NOT_YET[mode.name]}); scoring it in another mode would judge another model. "
            "evaluation.mode=text_to_video scores its text-to-video behaviour only, knowingly"
        )
    return mode
