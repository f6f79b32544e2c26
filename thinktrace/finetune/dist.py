"""Who writes what when training runs in several processes (started by `accelerate launch` or `torchrun`, which
set RANK / WORLD_SIZE for each): every process trains on its share of the rows, rank 0 alone writes the adapter,
the training log, the fingerprint, the checkpoint markers and the result. The other ranks wait at barriers and
return rank 0's result."""

from __future__ import annotations

import os


def rank() -> int:
    """This process's global rank (0 without a launcher)."""
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    """Training processes in all (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every training process (nothing to wait for in one process or before the group exists)."""
    import torch.distributed as dist

    if world_size() > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()
