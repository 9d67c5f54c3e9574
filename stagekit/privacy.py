"""Privacy switches: telemetry off and offline modes on, before any library is imported."""

from __future__ import annotations

import os

# setdefault: a user may still opt in explicitly (e.g. WANDB_MODE=online), never by accident.
OFFLINE_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "WANDB_MODE": "offline",
    "WANDB_DISABLED": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "GIT_PYTHON_REFRESH": "quiet",
}


def apply_offline_defaults() -> None:
    """Set every telemetry/offline switch this tool knows, unless the user set it already."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
