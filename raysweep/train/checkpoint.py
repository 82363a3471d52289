"""Atomic, prunable training checkpoints.

A checkpoint is a directory ``OUT/checkpoints/step_000001234/`` holding ``state.pt`` (everything
needed to continue: model, optimisers, schedulers, GECO, balancer, step) and ``meta.json``. It is
written under a temporary name and renamed into place, so a crash mid-write never leaves a
half-written checkpoint that a resume could pick up. Tune copies these directories into its own
storage when the trial reports them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from raysweep.errors import RaysweepError

PREFIX = "step_"
STATE_FILE = "state.pt"
META_FILE = "meta.json"


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint taken after `step` optimiser steps."""
    return f"{PREFIX}{step:09d}"


def save_checkpoint(ckpt_root: Path, step: int, state: dict[str, Any], meta: dict[str, Any], keep: int) -> Path:
    """Write `state` atomically as checkpoint `step` under `ckpt_root`; keep the newest `keep`.

    Returns the final checkpoint directory.
    """
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / checkpoint_name(step)
    tmp = ckpt_root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(state, tmp / STATE_FILE)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    _fsync_dir(tmp)
    if final.exists():
        # Same step saved again (a resumed run re-validating): replace it whole.
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(ckpt_root)
    prune_checkpoints(ckpt_root, keep)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints under `ckpt_root`, oldest first (temporary directories ignored)."""
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(ckpt_root)
    return found[-1] if found else None


def prune_checkpoints(ckpt_root: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints, and leftovers of interrupted writes."""
    for stale in ckpt_root.glob(".tmp-*"):
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint directory (or its ``state.pt``) without unpickling arbitrary objects."""
    file = path / STATE_FILE if path.is_dir() else path
    if not file.is_file():
        raise RaysweepError(f"{path}: not a raysweep checkpoint (no {STATE_FILE}); pass a directory under OUT/checkpoints/")
    return torch.load(file, map_location=map_location, weights_only=True)
