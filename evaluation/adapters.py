"""What an adapter file says about itself: the base model it was trained on."""

from __future__ import annotations

from pathlib import Path

from stagekit.errors import UserError


def adapter_header(path: Path) -> dict[str, str]:
    """The safetensors metadata header (empty when the file has none)."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise UserError(f"adapter file {path} does not exist")
    try:
        with safe_open(str(path), framework="np") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for non-safetensors files
        raise UserError(f"{path} is not a readable safetensors adapter: {e}") from e


def made_for(path: Path, model_hash: str) -> bool:
    """Whether the adapter's header names this base (or names none: hand-made adapters)."""
    return adapter_header(path).get("base_model_hash", model_hash) == model_hash


def check_base_model(path: Path, model_hash: str) -> None:
    """Refuse an adapter whose header names another base model's hash (trainer/export.py writes
    `base_model_hash`); a file without one is accepted (hand-made or third-party adapters)."""
    header = adapter_header(path)
    made_for = header.get("base_model_hash")
    if made_for and made_for != model_hash:
        raise UserError(
            f"adapter {path} was trained on base model {header.get('base_model', '?')} "
            f"(hash {made_for[:12]}), not on this one (hash {model_hash[:12]}): "
            "use the base model it was made for (model=...) or an adapter trained on this one, "
            "or evaluation.allow_cross_version=true to test it on this base"
        )
