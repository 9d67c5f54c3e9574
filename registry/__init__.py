"""The adapter registry on MLflow: register, describe, and (later) promote and pull adapters.

Light on purpose: no torch and nothing of ours but `stagekit`, so an inference surface can install
just the `registry` extra to pull adapters. MLflow itself is imported lazily, inside functions.

Public surface:
- `registry.config.RegistryConfig`: the `registry:` section of the pipeline config.
- `registry.store`: `local_tracking_uri`, `ensure_schema`, `open_client`, `ensure_experiment`.
- `registry.register`: `register_adapter`, `Registration` (a duplicate comes back with a message).
- `registry.scan`: `check_adapter` (NaN / Inf / all-zero / below-noise adapters refused).
- `registry.pull`: `pull` (one file per consumer: comfyui, ltx-pipelines, diffusers).
- `registry.describe`: `describe_version`, `format_registration`.
"""
