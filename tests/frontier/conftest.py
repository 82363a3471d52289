"""Fixtures of the frontier tests: an MLflow store filled by two real (tiny) Tune sweeps."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The real-sweep helpers live beside the tracking tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking"))

from sweep_helpers import init_ray, run_sweep, tiny_trial_dict  # noqa: E402

EXPERIMENT = "frontier-report-test"


@pytest.fixture(scope="module")
def report_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(tracking URI, storage folder) of an embedded SQLite store holding, in one experiment,
    a fixed-beta sweep (box blur, lambda x beta) and a GECO sweep (lambda x seed at one target)."""
    import ray
    from ray import tune

    from raysweep.tracking.mlflow import mlflow_callback

    storage = tmp_path_factory.mktemp("report_store")
    init_ray(num_cpus=2)
    try:
        fixed = {
            "trial": tiny_trial_dict(),
            "loss.lambda_neural": tune.grid_search([0.0, 0.5]),
            "objective.beta": tune.grid_search([0.03, 0.125]),
        }
        geco = {
            "trial": tiny_trial_dict(**{"objective.geco.target_rate": 4.0}),
            "loss.lambda_neural": tune.grid_search([0.0, 0.5]),
            "train.seed": tune.grid_search([0, 1]),
        }
        for name, space in (("fixed_beta", fixed), ("matched_rate", geco)):
            callback = mlflow_callback(storage, name, experiment=EXPERIMENT)
            results = run_sweep(storage, name, space, callback, max_concurrent=2)
            assert not results.errors and callback.errors == 0
        yield callback.tracking_uri, storage
    finally:
        ray.shutdown()
