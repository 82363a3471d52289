"""The driver's cleanup of DDP trials' placement groups: :class:`PlacementGroupReaper`.

A DDP trial's workers sit in a placement group that its TorchTrainer's controller creates and
removes. A trial that Tune stops (ASHA) or that fails has its process, and the controller with it,
killed before the controller can remove the group, and Ray Train's own cleaner removes it only when
Ray's State API answers (a running dashboard): without one the group keeps its CPUs and the next
trials wait forever (the pattern of Ray issue 54305). Rank 0 of every DDP trial reports its group's
id with each result under a key (:data:`raysweep.tune.trainable.PLACEMENT_GROUP_KEY`, given to the
callback, so this module imports nothing of raysweep); this callback removes the
groups of a trial when it ends, fails or is retried.

A module of its own because it subclasses ``tune.Callback`` at import (Tune pickles callbacks with
the experiment, so the class must be importable by name); the trainable imports no Ray at import.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune

logger = logging.getLogger(__name__)

class PlacementGroupReaper(tune.Callback):
    """Remove the placement groups a stopped or failed DDP trial leaves behind (removing a group
    its trainer already removed does nothing)."""

    def __init__(self, result_key: str) -> None:
        self.result_key = result_key  # where a result names its trial's group (hex id)
        self.groups: dict[str, set[str]] = {}  # trial id -> hex ids of its workers' groups

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """Record the group a result names."""
        group = result.get(self.result_key)
        if isinstance(group, str) and group:
            self.groups.setdefault(trial.trial_id, set()).add(group)

    def remove_groups(self, trial: Any) -> None:
        """Remove every group recorded for `trial`."""
        import ray
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        for group in self.groups.pop(trial.trial_id, set()):
            try:
                remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group)))
            except Exception as err:  # noqa: BLE001 - removed already, or Ray is shutting down
                logger.debug("placement group %s of trial %s: %s", group, trial.trial_id, err)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.remove_groups(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.remove_groups(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.remove_groups(trial)
