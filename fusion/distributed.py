"""Process-group setup for DistributedDataParallel training under ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; ``setup_from_env`` joins that group with NCCL when CUDA is available
and gloo otherwise.  Without ``WORLD_SIZE`` (or with 1) training runs in one process and
no group is created.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in the training job; rank 0 alone writes files."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_from_env() -> ProcessInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return ProcessInfo(0, 1, device)
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        logger.info("joined the %s process group as rank %d of %d", backend, dist.get_rank(), world_size)
    rank = dist.get_rank()
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return ProcessInfo(rank, dist.get_world_size(), device)


def all_sum(value: float, process: ProcessInfo) -> float:
    """Return ``value`` summed over all processes (the value itself in a single process)."""
    if not process.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=process.device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def barrier(process: ProcessInfo) -> None:
    """Wait until every process reaches this point (no-op in a single process)."""
    if process.distributed:
        dist.barrier()


def teardown(process: ProcessInfo) -> None:
    """Leave the process group created by ``setup_from_env``."""
    if process.distributed and dist.is_initialized():
        dist.destroy_process_group()
