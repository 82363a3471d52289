"""The few torch.distributed facts the training loop needs, usable with or without a process group.

The loop never starts a process group itself: `raysweep train --workers N` (see
:mod:`raysweep.train.launch`) or Ray Train's TorchTrainer does, and the loop adapts to whatever is
initialised.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """Rank within the node, from LOCAL_RANK (set by our launcher, torchrun and Ray Train)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def select_device(preference: str) -> torch.device:
    """The device for this rank: ``auto`` picks this rank's GPU when CUDA is usable, else the CPU."""
    use_cuda = preference == "cuda" or (preference == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            from raysweep.errors import RaysweepError

            raise RaysweepError("train.device is 'cuda' but no CUDA GPU is visible: use train.device=auto or cpu")
        index = local_rank() % max(1, torch.cuda.device_count())
        return torch.device("cuda", index)
    return torch.device("cpu")


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (identity when not distributed). Returns a new tensor."""
    out = values.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= world_size()
    return out


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (identity when not distributed). Returns a new tensor."""
    out = values.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()
