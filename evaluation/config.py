"""Typed config of the `evaluation` group."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from evaluation.modes import MODES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptSuite(_Strict):
    """Prompt templates over the dataset card ({trigger}, {class_noun}), by purpose."""

    in_distribution: list[str] = Field(min_length=1)  # the subject as trained, with the trigger
    out_of_distribution: list[str] = Field(default_factory=list)  # the subject in new settings
    prior_preservation: list[str] = Field(default_factory=list)  # the class, without the trigger


class FeaturesConfig(_Strict):
    """Which backend computes which features; production weights load from local paths only."""

    image: str = "efficientnet-lite0"  # or clip, dinov2 (needs paths.<name>)
    text_image: str | None = None  # clip: enables prompt adherence
    video: str | None = None  # videomae: enables FVD/KID
    # backend name → local folder (face_detector, face_embedder: local ONNX files)
    paths: dict[str, str] = Field(default_factory=dict)
    frames_per_clip: int = Field(5, ge=2)  # evenly spaced frames scored per clip
    face_min_score: float = Field(0.9, gt=0.0, lt=1.0)  # the face detector's confidence floor


class StatsConfig(_Strict):
    """Intervals on per-prompt means (evaluation/stats.py); a suite with fewer prompts than
    `confidence` needs (6 at 0.95) is reported as too small and cannot pass the gate."""

    method: Literal["t", "bootstrap-t"] = "t"  # bootstrap-t: studentised cluster bootstrap
    resamples: int = Field(2000, ge=100)  # bootstrap-t only
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0  # bootstrap-t only


class GateConfig(_Strict):
    """Pass only when every rule holds; each failure is one line in `reasons`."""

    min_fidelity_lift_ci_low: float = 0.0  # the lift's CI lower bound must exceed this
    temporal_consistency_margin: float = 0.05  # adapter may be at most this much below base
    min_prior_preservation: float = 0.5  # class renders: adapter vs base similarity floor
    copy_threshold: float = Field(0.97, gt=0.0, le=1.0)  # a frame this close to training = copy
    max_copy_fraction: float = Field(0.0, ge=0.0, le=1.0)  # share of renders allowed to copy
    # when a champion is registered: the lift over it must exceed this (None: report only)
    min_lift_vs_champion_ci_low: float | None = None
    # held-out denoising error, adapter - base: its CI lower bound must not exceed this (None:
    # report only). Above 0 = the adapter predicts the reference clips confidently worse.
    max_denoise_error_change_ci_low: float | None = 0.0
    # when the reference clips move: the adapter's share of moving renders may fall at most this
    # far below min(base, references) (None: report only)
    max_dynamic_degree_drop: float | None = Field(0.25, ge=0.0, le=1.0)
    # modes with audio (audio_video, text_to_audio): the audio lift (base MCD - adapter MCD
    # against the reference clips' audio, dB) must have its CI lower bound above this (None:
    # report only). Never applied to a mode without audio.
    min_audio_mcd_lift_ci_low: float | None = 0.0


class EvaluationConfig(_Strict):
    """Prompt suite, seeds and render settings shared by the base and adapter renders; the
    dataset's own `evaluation.yaml` overrides `prompts` and `seeds`."""

    prompts: PromptSuite
    seeds: list[int] = Field(min_length=1)
    width: int = Field(64, gt=0)
    height: int = Field(64, gt=0)
    frames: int = Field(17, gt=0)
    fps: float = Field(24.0, gt=0)
    steps: int = Field(4, gt=0)
    guidance_scale: float = Field(1.0, ge=0)
    # the LoRA strength the adapter is rendered and scored at, and registered with: an
    # inference surface applying it at another strength gets another model than was judged
    adapter_strength: float = Field(1.0, gt=0)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    fvd_min_clips: int = Field(8, ge=2)  # per side; fewer gives a meaningless covariance
    denoising: bool = True  # held-out denoising error on the references (evaluation/denoising.py)
    # evaluate an adapter on a base other than the one it was trained on (another LTX version):
    # the verdict then records that version as tested (registry: `tested.<version>`)
    allow_cross_version: bool = False
    # what the adapter was trained to do: auto reads it from the adapter (its header, else the
    # train.json beside it); a mode name overrides (evaluation/modes.py)
    mode: Literal["auto", *MODES] = "auto"  # type: ignore[valid-type]
    # IC-LoRA references (reference_video): `auto` uses a reference clip's paired control
    # (`<clip>_ref.mp4` beside it) where there is one, else its Sobel edges (what
    # preprocess.reference=edges trains on); `edges` / `paired` force one
    reference_control: Literal["auto", "edges", "paired"] = "auto"

    def render_settings(self) -> dict[str, float | int]:
        return {
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "fps": self.fps,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "adapter_scale": self.adapter_strength,
        }
