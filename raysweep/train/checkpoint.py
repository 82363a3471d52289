"""Atomic, prunable training checkpoints.

A checkpoint is a directory ``OUT/checkpoints/step_000001234/`` holding ``state.pt`` (everything
needed to continue: model, optimisers, schedulers, GECO, balancer, step) and ``meta.json``. It is
written under a temporary name and renamed into place, so a crash mid-write never leaves a
half-written checkpoint that a resume could pick up. Tune copies these directories into its own
storage when the trial reports them.

A checkpoint can still be damaged after it was written (a disk filling up, a copy cut short, a
file truncated by hand): :func:`checkpoint_problem` reads ``state.pt``'s zip directory and checks
every entry's CRC without unpickling, so ``raysweep train --resume`` falls back to the newest
checkpoint that is intact (:func:`latest_good_checkpoint`) and a load that fails anyway names the
file in one line instead of a torch traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysweep.errors import RaysweepError

if TYPE_CHECKING:
    import torch

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
    import torch  # here, not at the top: finding and checking checkpoints (the CLI's --resume) needs no torch

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


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint directory `path` cannot be resumed from (missing, truncated or corrupt
    ``state.pt``), or None when its file is intact."""
    file = path / STATE_FILE
    if not file.is_file():
        return f"no {STATE_FILE}"
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"{STATE_FILE} is truncated or not a torch checkpoint ({err})"
    if bad is not None:
        return f"{STATE_FILE} is corrupt (entry {bad} fails its CRC check)"
    return None


def newer_intact_sibling(path: Path) -> Path | None:
    """Where `path` was deleted (its folder or its ``state.pt`` gone, as Tune's rotation leaves it),
    the newest intact checkpoint folder beside it (same name prefix, a later name, e.g. Tune's
    ``checkpoint_000001`` beside ``checkpoint_000000``); else None. A checkpoint that is there but
    damaged gets None: that is no rotation, and the caller refuses it.

    Why: Tune deletes a trial's oldest checkpoint when a newer one is registered
    (``checkpoint.num_to_keep``) and saves its experiment state pointing at the newer one a moment
    later. A driver killed between the two leaves a state that records the checkpoint being deleted;
    the trial then continues from the newer one it had already reported, as the driver would have."""
    stem = path.name.rstrip("0123456789")
    if not stem or not path.parent.is_dir() or (path / STATE_FILE).exists():
        return None
    newer = sorted((p for p in path.parent.iterdir() if p.is_dir() and p.name.startswith(stem) and p.name > path.name
                    and p.name[len(stem):].isdigit()), key=lambda p: p.name)
    for candidate in reversed(newer):
        if checkpoint_problem(candidate) is None:
            return candidate
    return None


def latest_good_checkpoint(ckpt_root: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest intact checkpoint under `ckpt_root` (or None) and the newer ones skipped as
    damaged, each with its :func:`checkpoint_problem`."""
    skipped: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(ckpt_root)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


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
    import torch

    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RaysweepError(
            f"{file}: the checkpoint cannot be read ({first}): it is truncated or corrupt; resume from an older "
            f"checkpoint (delete {file.parent}) or start again"
        ) from None
