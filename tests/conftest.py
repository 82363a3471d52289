"""Shared fixtures: tiny trial configurations that train on a CPU in seconds."""

from __future__ import annotations

import os
from typing import Any

import pytest

from raysweep.config import TrialConfig, apply_overrides, trial_config_from_dict

# Two cores: keep torch from oversubscribing when several processes run.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def tiny_trial(overrides: list[str] | None = None, **blocks: Any) -> TrialConfig:
    """A tiny vector VAE on 16x16 XYSquares (one square, 4x4 grid), 20 steps, val every 10."""
    raw: dict[str, Any] = {
        "data": {"dataset": "xysquares", "image_size": 16, "val_size": 64,
                 "xysquares": {"square_size": 4, "num_squares": 2}},
        "model": {"arch": "vector_vae", "preset": "tiny", "latent_dim": 6},
        "loss": {"neural": "none", "lambda_neural": 0.0},
        "objective": {"beta": 0.0625},  # per image (1 per batch of 16)
        "train": {"max_steps": 20, "batch_size": 16, "lr": 2e-3, "val_every": 10, "seed": 0},
    }
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
