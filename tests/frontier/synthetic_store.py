"""Synthetic sweeps written into a real MLflow store the way raysweep's tracking callback writes them.

One parent run per sweep (tags ``raysweep.role=sweep``, ``raysweep.sweep``, ``raysweep.storage``,
optionally its ``sweep.yaml``) and one child run per trial (``mlflow.parentRunId``,
``raysweep.role=trial``, ``raysweep.trial_id``, ``raysweep.status``, the dataset / loss / model
tags), params as dotted config keys in MLflow's text form (``loss.lambda_neural``,
``objective.beta``, ``train.seed``...), metrics at their training step (``rate``, ``mse``,
``distortion_sse``, ``anisotropy``, ``step``): what :mod:`raysweep.tracking.mlflow` writes, without
training anything, so statistics with a known truth can be read back through ``collect_runs``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from raysweep.tracking.operating_points import OPERATING_POINT_TAG, TARGET_RATE_TAG
from raysweep.tracking.results import param_text
from raysweep.tracking.store import (
    DATASET_TAG,
    LOSS_TAG,
    MODEL_TAG,
    PARENT_TAG,
    ROLE_SWEEP,
    ROLE_TAG,
    ROLE_TRIAL,
    STATUS_TAG,
    STORAGE_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
    get_or_create_experiment,
    make_client,
)

PARAM_KEYS = {  # run-dict key -> the dotted config key the callback logs it under
    "dataset": "data.dataset", "model": "model.arch", "loss": "loss.neural", "pixel_loss": "loss.pixel",
    "lambda_neural": "loss.lambda_neural", "beta": "objective.beta", "target_rate": "objective.geco.target_rate",
    "seed": "train.seed",
}
METRIC_KEYS = ("rate", "mse", "distortion_sse", "anisotropy")
FINAL_STEP = 600


def log_sweep(uri: str, experiment: str, sweep: str, runs: Iterable[Mapping[str, Any]],
              sweep_yaml: Mapping[str, Any] | None = None) -> str:
    """Write one sweep: its parent run and one finished child run per entry of `runs` (keys of
    :data:`PARAM_KEYS` and :data:`METRIC_KEYS`; ``status`` (default finished); ``op_target`` makes it a
    matched-rate operating point at that target; ``params``: more dotted config keys and values;
    ``history``: {metric: [(step, value), ...]} logged at those steps, before the final values).
    Returns the parent run's id."""
    from mlflow.entities import Metric, Param

    client = make_client(uri)
    experiment_id = get_or_create_experiment(client, experiment)
    parent = client.create_run(experiment_id, run_name=sweep, tags={
        ROLE_TAG: ROLE_SWEEP, SWEEP_TAG: sweep, STORAGE_TAG: f"/synthetic/{sweep}", STATUS_TAG: "finished"})
    parent_id = parent.info.run_id
    if sweep_yaml is not None:
        client.log_dict(parent_id, dict(sweep_yaml), "sweep.yaml")
    for i, run in enumerate(runs):
        status = run.get("status", "finished")
        tags = {PARENT_TAG: parent_id, ROLE_TAG: ROLE_TRIAL, TRIAL_ID_TAG: f"{sweep}_{i:05d}", SWEEP_TAG: sweep,
                STATUS_TAG: status, DATASET_TAG: run.get("dataset", "xysquares"), LOSS_TAG: run.get("loss", "none"),
                MODEL_TAG: run.get("model", "vector_vae")}
        if run.get("op_target") is not None:
            tags.update({OPERATING_POINT_TAG: "true", TARGET_RATE_TAG: f"{run['op_target']:g}"})
        child = client.create_run(experiment_id, run_name=f"{sweep}_{i:05d}", tags=tags)
        params = {"data.dataset": "xysquares", "model.arch": "vector_vae", "loss.neural": "none", "loss.pixel": "sse"}
        params.update({PARAM_KEYS[k]: v for k, v in run.items() if k in PARAM_KEYS and v is not None})
        params.update(run.get("params") or {})
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, int(step)) for k, points in (run.get("history") or {}).items()
                   for step, v in points]
        final = int(run.get("final_step", FINAL_STEP))
        metrics += [Metric(k, float(run[k]), now, final) for k in METRIC_KEYS if k in run]
        metrics.append(Metric("step", float(final), now, final))
        client.log_batch(child.info.run_id, metrics=metrics,
                         params=[Param(k, param_text(v)) for k, v in params.items()])
        client.set_terminated(child.info.run_id, "FINISHED" if status == "finished" else "FAILED")
    client.set_terminated(parent_id, "FINISHED")
    return parent_id
