"""Shared fixtures: tiny trial configurations that train on a CPU in seconds."""

from __future__ import annotations

import os
from typing import Any

import pytest
from tiny_trial import tiny_trial_tree

from raysweep.config import TrialConfig, apply_overrides, trial_config_from_dict

# Two cores: keep torch from oversubscribing when several processes run.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def tiny_trial(overrides: list[str] | None = None, **blocks: Any) -> TrialConfig:
    """The tiny trial of :mod:`tiny_trial` (16x16 XYSquares, 20 steps, val every 10) as a validated
    config; `blocks` update whole blocks, `overrides` are ``--set`` style dotted assignments."""
    raw = tiny_trial_tree()
    for block, values in blocks.items():
        raw[block].update(values)
    apply_overrides(raw, overrides or [])
    return trial_config_from_dict(raw)


@pytest.fixture
def make_trial():
    """Factory fixture: ``make_trial(["train.max_steps=40"])``."""
    return tiny_trial


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread per test process: on a 2-core box two torch threads fighting another
    busy process (a Ray worker, a DDP rank) run many times slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
