"""Helpers of the sweep tests: tiny sweep files over the tiny 16x16 trial."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from tiny_trial import tiny_trial_tree

REPO = Path(__file__).resolve().parents[2]


def tiny_sweep(name: str = "tiny", **blocks: Any) -> dict[str, Any]:
    """A sweep mapping over the tiny trial (:mod:`tiny_trial`: 20 steps, a validation every 10); `blocks`
    replace top-level blocks (``search=...``, ``resources=...``)."""
    raw: dict[str, Any] = {"name": name, "trial": tiny_trial_tree(), "search": {"mode": "grid"}}
    raw.update(copy.deepcopy(blocks))
    return raw


def write_sweep(folder: Path, raw: dict[str, Any]) -> Path:
    """Write a sweep mapping as ``<folder>/<name>.yaml``."""
    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def trial_states(sweep_dir: Path) -> dict[str, str]:
    """Trial id -> status in the newest Tune experiment state ({} while none is readable)."""
    files = sorted(sweep_dir.glob("experiment_state-*.json"))
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_text())
    except (OSError, json.JSONDecodeError):  # being rewritten right now
        return {}
    return {json.loads(t)["trial_id"]: json.loads(t)["status"] for t, _ in state["trial_data"]}


def asha_stop_iteration(scheduler: Any, metric: str | None = None, mode: str | None = None,
                        horizon: int = 1000) -> int | None:
    """The first ``training_iteration`` at which `scheduler` (ASHA) stops a lone trial, found by
    feeding it results through its public scheduler interface (None: never within `horizon`).
    `metric` and `mode`: what ``tune.TuneConfig`` would give a scheduler built without them.

    A lone trial meets no cutoff at any rung, so this is where ASHA's ``max_t`` ends it: a test of
    what the scheduler does, not of a private attribute."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    if metric is not None:
        scheduler.set_search_properties(metric, mode)
    trial = Trial("__fake", stub=True, trial_id="lone")
    scheduler.on_trial_add(None, trial)
    for iteration in range(1, horizon + 1):
        if scheduler.on_trial_result(None, trial, {"training_iteration": iteration, scheduler.metric: 1.0}) \
                == TrialScheduler.STOP:
            return iteration
    return None
