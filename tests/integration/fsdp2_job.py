"""train_job.py with `trainer.distributed=fsdp2`: the frozen base sharded by FSDP2.

usage: torchrun --nproc_per_node N fsdp2_job.py (train_job.py's arguments)
"""

from __future__ import annotations

import sys

from tests.integration import train_job

_config = train_job.job_config


def fsdp2_config(max_steps: int, batch_size: int = 1):
    return _config(max_steps, batch_size).model_copy(update={"distributed": "fsdp2"})


if __name__ == "__main__":
    train_job.job_config = fsdp2_config
    train_job.main(*sys.argv[1:])
