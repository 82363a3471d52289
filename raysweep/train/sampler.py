"""Deterministic, resumable batch order shared by every DDP rank.

Each epoch draws one global permutation of the training set from a generator seeded by
``(seed, epoch)``. Global step `s` takes the `s`-th slice of ``batch_size`` indices of that
permutation; rank `r` of `W` takes its contiguous share of that slice. So

- a run with W workers sees exactly the same global batches as a run with 1 worker, and
- a run resumed at step `s` continues with exactly the batches an uninterrupted run would use,

without saving any sampler or RNG state. The incomplete last batch of an epoch is dropped so
every step has the same global batch size.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of training indices used in `epoch`."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator)


class StepBatchSampler(Sampler[list[int]]):
    """Yields this rank's index lists for global steps ``start_step, start_step + 1, ...``.

    Args:
        num_items: size of the training set.
        batch_size: the global batch size (all ranks together).
        rank, world_size: this rank's share of each global batch.
        seed: run seed.
        start_step: first global step to produce (resume point).
        total_steps: last step (exclusive).
    """

    def __init__(
        self, num_items: int, batch_size: int, rank: int, world_size: int, seed: int, start_step: int, total_steps: int
    ) -> None:
        if batch_size % world_size:
            raise ValueError("batch_size must be divisible by world_size")
        self.num_items = num_items
        self.batch_size = batch_size
        self.per_rank = batch_size // world_size
        self.rank = rank
        self.seed = seed
        self.start_step = start_step
        self.total_steps = total_steps
        self.steps_per_epoch = num_items // batch_size

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def __iter__(self) -> Iterator[list[int]]:
        epoch = -1
        perm = torch.empty(0, dtype=torch.long)
        for step in range(self.start_step, self.total_steps):
            step_epoch, within = divmod(step, self.steps_per_epoch)
            if step_epoch != epoch:
                epoch = step_epoch
                perm = epoch_permutation(self.num_items, self.seed, epoch)
            start = within * self.batch_size + self.rank * self.per_rank
            yield perm[start : start + self.per_rank].tolist()
