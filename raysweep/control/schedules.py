"""Schedules over optimiser steps: the KL warm-up ramp and the cosine-annealed learning rate."""

from __future__ import annotations

import math


def kl_warmup_factor(step: int, warmup_steps: int) -> float:
    """Sine KL warm-up: ``w(t) = sin(pi/2 * min(1, t / T_warm))`` (SPEC section 2).

    `step` counts optimiser steps from 0. With ``warmup_steps == 0`` the factor is 1 from the start.
    Returns a dimensionless factor in [0, 1] that multiplies a fixed beta.
    """
    if warmup_steps <= 0:
        return 1.0
    return math.sin(0.5 * math.pi * min(1.0, step / warmup_steps))


def in_warmup(step: int, warmup_steps: int) -> bool:
    """True while the warm-up ramp has not reached 1 (GECO holds beta during this phase)."""
    return warmup_steps > 0 and step < warmup_steps


def cosine_lr_factor(step: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Cosine annealing over the whole run: 1 at step 0, `min_ratio` at `total_steps`.

    Used through ``torch.optim.lr_scheduler.LambdaLR`` so the schedule is checkpointed with it.
    """
    progress = min(1.0, step / max(1, total_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
