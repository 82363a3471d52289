"""The tiny trial every fast test and benchmark trains: defined once, here.

A tiny vector VAE (6 latent dimensions) on 16x16 XYSquares (two 4-pixel squares on a 4x4 grid:
256 images, 64 held out for validation, 192 for training = 12 steps per epoch at batch 16), pixel
SSE only, 20 steps with a validation every 10: a trial trains on one CPU core in about a second.

Importable as ``tiny_trial`` from every test (``tests/`` is on ``sys.path`` through its
``conftest.py``) and from ``benchmarks/`` (which put ``tests/`` on ``sys.path``). Callers that need
another length or loss override keys with :func:`tiny_trial_tree` rather than copying the mapping.
"""

from __future__ import annotations

import copy
from typing import Any

TINY_TRIAL: dict[str, Any] = {
    "data": {"dataset": "xysquares", "image_size": 16, "val_size": 64,
             "xysquares": {"square_size": 4, "num_squares": 2}},
    "model": {"arch": "vector_vae", "preset": "tiny", "latent_dim": 6},
    "loss": {"neural": "none", "lambda_neural": 0.0},
    "objective": {"beta": 0.0625},  # per image (1 per batch of 16)
    "train": {"max_steps": 20, "batch_size": 16, "lr": 2e-3, "val_every": 10, "seed": 0},
}


def tiny_trial_tree(**dotted: Any) -> dict[str, Any]:
    """A fresh copy of :data:`TINY_TRIAL` (a nested trial mapping) with dotted-key overrides,
    e.g. ``tiny_trial_tree(**{"train.max_steps": 40, "loss.neural": "box_blur"})``."""
    tree = copy.deepcopy(TINY_TRIAL)
    for key, value in dotted.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = copy.deepcopy(value)
    return tree
