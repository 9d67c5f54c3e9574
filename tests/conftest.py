"""Shared test set-up: offline switches on for every test process."""

from __future__ import annotations

from stagekit.privacy import apply_offline_defaults

apply_offline_defaults()


def pytest_configure(config) -> None:
    """The tests run the tiny model, which is fastest on one thread (see configure_runtime)."""
    import torch

    torch.set_num_threads(1)
