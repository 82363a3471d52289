"""Matched-rate operating points in MLflow, written from the driver after the Tuner finishes.

- The table (``operating_points.csv`` and ``operating_points.json``, as
  :func:`raysweep.tune.matched_rate.points.write_operating_points` writes them) is logged under
  ``operating_points/`` (:data:`raysweep.names.OPERATING_POINTS_ARTIFACT_DIR`) of the sweep's
  parent run (found by its ``raysweep.sweep`` + ``raysweep.storage`` tags, as the tracking
  callback finds it: :func:`raysweep.storage.parent_run_key`).
- The chosen trial of each (cell, target) is tagged on its child run (found by
  ``raysweep.trial_id`` under that parent): ``raysweep.operating_point=true`` and
  ``raysweep.target_rate=<R*>``. A child run tagged by an earlier pass (before a ``resume``) whose
  trial is no longer chosen loses both tags, so exactly the chosen runs carry them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from raysweep.names import OPERATING_POINTS_ARTIFACT_DIR
from raysweep.storage import parent_run_key
from raysweep.tracking import store
from raysweep.tracking.store import PARENT_TAG

logger = logging.getLogger(__name__)

OPERATING_POINT_TAG = "raysweep.operating_point"
TARGET_RATE_TAG = "raysweep.target_rate"


def log_operating_points(
    tracking_uri: str, experiment: str, sweep_name: str, storage_dir: str,
    points: Iterable[Any], files: Mapping[str, str | Path],
) -> int:
    """Log the operating-points table on the sweep's parent run and tag the chosen child runs.

    Args:
        tracking_uri: the sweep's MLflow store; experiment: its experiment name.
        sweep_name, storage_dir: the sweep's name and ``--storage`` folder (the parent run's key).
        points: :class:`raysweep.tune.matched_rate.points.OperatingPoint` objects.
        files: ``{"csv": path, "json": path}`` as ``write_operating_points`` returns.

    Returns:
        The number of child runs tagged as operating points. Nothing is written (0) when the sweep
        has no parent run in the store.
    """
    client = store.make_client(tracking_uri)
    experiment_id = store.get_or_create_experiment(client, experiment)
    parent = store.find_parent_run(client, experiment_id, sweep_name, parent_run_key(storage_dir, sweep_name))
    if parent is None:
        logger.warning("raysweep tracking: sweep %s has no parent run in %s; operating points not logged",
                       sweep_name, tracking_uri)
        return 0
    parent_id = parent.info.run_id
    for path in files.values():
        client.log_artifact(parent_id, str(path), OPERATING_POINTS_ARTIFACT_DIR)
    chosen = {str(p.trial_id): float(p.target_rate) for p in points if p.trial_id}
    children = store.search_all(client, [experiment_id], f"tags.`{PARENT_TAG}` = {store.quote(parent_id)}")
    tagged = 0
    for run in children:
        trial_id = run.data.tags.get(store.TRIAL_ID_TAG)
        if trial_id in chosen:
            client.set_tag(run.info.run_id, OPERATING_POINT_TAG, "true")
            client.set_tag(run.info.run_id, TARGET_RATE_TAG, f"{chosen[trial_id]:g}")
            tagged += 1
        elif OPERATING_POINT_TAG in run.data.tags:
            client.delete_tag(run.info.run_id, OPERATING_POINT_TAG)
            if TARGET_RATE_TAG in run.data.tags:
                client.delete_tag(run.info.run_id, TARGET_RATE_TAG)
    return tagged
