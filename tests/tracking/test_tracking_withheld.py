"""A metric withheld as unsound (an aggregated anisotropy from too few posterior means) is absent from
MLflow's metrics, its reason is in the child run's tag, and the report says "withheld" with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sweep_helpers import run_sweep, tiny_trial_dict

from raysweep.frontier.collect import collect_runs
from raysweep.frontier.report import build_report
from raysweep.tracking.mlflow import mlflow_callback
from raysweep.tracking.store import PARENT_TAG, WITHHELD_TAG, make_client

pytestmark = pytest.mark.usefixtures("ray_cpus")


def test_withheld_metric_reaches_mlflow_as_a_reason(tmp_path: Path) -> None:
    # autoencoder_kl with 4 latent channels at 16 px: 4 x 4 x 4 = 64 coordinates, from the
    # dataset's 256 images (below 4 per coordinate) at every validation.
    trial = tiny_trial_dict(**{"model.arch": "autoencoder_kl", "model.latent_dim": 4, "train.max_steps": 20})
    callback = mlflow_callback(tmp_path, "withheld", experiment="withheld-test")
    results = run_sweep(tmp_path, "withheld", {"trial": trial}, callback, max_concurrent=1)
    assert not results.errors and callback.errors == 0
    client = make_client(callback.tracking_uri)
    experiment = client.get_experiment_by_name("withheld-test")
    (child,) = [r for r in client.search_runs([experiment.experiment_id])
                if r.data.tags.get(PARENT_TAG) == callback.parent_run_id]
    assert "aggregated_anisotropy" not in child.data.metrics
    assert "channel_anisotropy" in child.data.metrics and "rate" in child.data.metrics
    reasons = json.loads(child.data.tags[WITHHELD_TAG])
    assert "64 latent coordinates" in reasons["aggregated_anisotropy"]

    runs = collect_runs(callback.tracking_uri, "withheld-test").runs
    assert runs.loc[0, "withheld"] == reasons
    out = tmp_path / "report"
    build_report(tracking_uri=callback.tracking_uri, experiment="withheld-test", out_dir=out)
    page = (out / "index.html").read_text()
    assert '<td class="withheld" title="' in page and "64 latent coordinates" in page
