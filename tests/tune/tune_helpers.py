"""Helpers of the sweep tests: tiny sweep files over the tiny 16x16 trial."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]

TINY_TRIAL: dict[str, Any] = {
    "data": {"dataset": "xysquares", "image_size": 16, "val_size": 64, "xysquares": {"square_size": 4, "num_squares": 2}},
    "model": {"arch": "vector_vae", "preset": "tiny", "latent_dim": 6},
    "loss": {"neural": "none", "lambda_neural": 0.0},
    "objective": {"beta": 0.0625},  # per image (1 per batch of 16)
    "train": {"max_steps": 20, "batch_size": 16, "lr": 2e-3, "val_every": 10, "seed": 0},
}


def tiny_sweep(name: str = "tiny", **blocks: Any) -> dict[str, Any]:
    """A sweep mapping over the tiny 16x16 trial (20 steps, a validation every 10); `blocks`
    replace top-level blocks (``search=...``, ``resources=...``)."""
    raw: dict[str, Any] = {"name": name, "trial": copy.deepcopy(TINY_TRIAL), "search": {"mode": "grid"}}
    raw.update(copy.deepcopy(blocks))
    return raw


def write_sweep(folder: Path, raw: dict[str, Any]) -> Path:
    """Write a sweep mapping as ``<folder>/<name>.yaml``."""
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
