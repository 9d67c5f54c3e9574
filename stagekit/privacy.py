"""Privacy switches: telemetry off and offline modes on, before any library is imported."""

from __future__ import annotations

import logging
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


# Loggers that only report a download this tool refuses on purpose. bitsandbytes (imported by
# peft whenever it is installed) tries to fetch a CPU kernel from the Hugging Face hub on
# AVX512-BF16 machines and warns, on every run, that it could not: its own kernel is used.
QUIET_LOGGERS = ("bitsandbytes.backends.cpu.ops",)


def apply_offline_defaults() -> None:
    """Set every telemetry/offline switch this tool knows, unless the user set it already."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
