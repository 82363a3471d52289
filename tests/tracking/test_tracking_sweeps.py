"""Real Tune sweeps of the real training loop, tracked in real MLflow stores (no mocks).

- against an ``mlflow server`` process: one child run per trial, every metric with one point per
  validation, params, tags and artifacts present, the parent found again on resume;
- a trial that crashes and is retried keeps exactly one child run whose history continues;
- six concurrent trials (ASHA stopping some) on the embedded SQLite store, read by another client
  meanwhile, lose no metric and never hit "database is locked".
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from ray import tune
from sweep_helpers import run_sweep, tiny_trial_dict, trainable

from raysweep.tracking.mlflow import ARTIFACT_FILES, MlflowTrackingCallback, mlflow_callback
from raysweep.tracking.store import (
    DATASET_TAG,
    LOSS_TAG,
    MODEL_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STATUS_TAG,
    TRIAL_ID_TAG,
    make_client,
)

pytestmark = pytest.mark.usefixtures("ray_cpus")


def _children(client: Any, callback: MlflowTrackingCallback) -> list[Any]:
    exp = client.get_experiment_by_name(callback.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get(PARENT_TAG) == callback.parent_run_id]


def _history_steps(client: Any, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def _tune_steps(result: Any) -> list[int]:
    """The training steps Tune itself recorded for one trial (its progress.csv)."""
    return [int(s) for s in result.metrics_dataframe["step"].tolist()]


def test_sweep_against_mlflow_server(server_url: str, tmp_path: Path) -> None:
    callback = mlflow_callback(tmp_path, "server_sweep", tracking_uri=server_url, experiment="raysweep-server-test",
                               sweep_config={"name": "server_sweep", "search": {"grid": ["loss.lambda_neural"]}})
    grid = {
        "trial": tiny_trial_dict(),
        "loss.lambda_neural": tune.grid_search([0.0, 0.5]),
        "objective.beta": tune.grid_search([0.5, 2.0]),
    }
    results = run_sweep(tmp_path, "server_sweep", grid, callback, max_concurrent=2)
    assert not results.errors
    assert callback.errors == 0
    client = make_client(server_url)
    children = _children(client, callback)
    by_trial = {r.data.tags[TRIAL_ID_TAG]: r for r in children}
    tune_ids = {res.metrics["trial_id"] for res in results}
    assert len(children) == 4 and set(by_trial) == tune_ids, "one child run per trial"

    for res in results:
        run = by_trial[res.metrics["trial_id"]]
        validations = _tune_steps(res)
        assert validations == [10, 20, 30]
        expected = ["rate", "mse", "psnr", "anisotropy", "aggregated_anisotropy", "active_units", "beta",
                    "distortion_sse"]
        if res.config["loss.lambda_neural"] > 0:
            expected.append("distortion_box_blur")
        for key in expected:
            assert key in run.data.metrics, key
        for key in run.data.metrics:
            assert _history_steps(client, run.info.run_id, key) == validations, key
        assert any(k.endswith("grad_share") for k in run.data.metrics), "balancer gradient shares logged"
        params = run.data.params
        assert float(params["loss.lambda_neural"]) == res.config["loss.lambda_neural"]
        assert float(params["objective.beta"]) == res.config["objective.beta"]
        assert params["data.dataset"] == "xysquares" and params["model.arch"] == "vector_vae"
        tags = run.data.tags
        assert (tags[STATUS_TAG], tags[DATASET_TAG], tags[LOSS_TAG], tags[MODEL_TAG]) == (
            "finished", "xysquares", "box_blur", "vector_vae")
        assert run.info.status == "FINISHED"
        artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert set(ARTIFACT_FILES) <= artifacts

    parent = client.get_run(callback.parent_run_id)
    assert parent.data.tags[ROLE_TAG] == "sweep" and parent.data.tags["raysweep.trials.finished"] == "4"
    assert parent.info.status == "FINISHED"
    assert "sweep.yaml" in {f.path for f in client.list_artifacts(parent.info.run_id)}
    # A resumed driver (a fresh callback, as after Tuner.restore) finds the same parent run.
    again = mlflow_callback(tmp_path, "server_sweep", tracking_uri=server_url, experiment="raysweep-server-test")
    again.setup()
    assert again.parent_run_id == callback.parent_run_id


def test_retried_trial_continues_its_child_run(tmp_path: Path) -> None:
    callback = mlflow_callback(tmp_path, "retry_sweep")
    space = {
        "trial": tiny_trial_dict(**{"train.max_steps": 40}),
        "_fail_at_step": 30,
        "_fail_marker": str(tmp_path / "failed_once"),
    }
    results = run_sweep(tmp_path, "retry_sweep", space, callback, max_failures=1, max_concurrent=1)
    assert (tmp_path / "failed_once").exists(), "the first attempt crashed"
    assert not results.errors
    client = make_client(callback.tracking_uri)
    children = _children(client, callback)
    assert len(children) == 1, "a retried trial keeps one child run"
    run = children[0]
    assert run.data.tags["raysweep.failures"] == "1"
    assert run.data.tags[STATUS_TAG] == "finished" and run.info.status == "FINISHED"
    # Step 30 was reported before the crash and again after the retry resumed from step 20's
    # checkpoint: its history holds it once, and continues to step 40.
    for key in ("rate", "mse", "step", "anisotropy"):
        assert _history_steps(client, run.info.run_id, key) == [10, 20, 30, 40], key
    assert {f.path for f in client.list_artifacts(run.info.run_id)} >= {"final.json", "variance_profile.csv"}


def test_six_concurrent_trials_on_sqlite_lose_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO)
    callback = mlflow_callback(tmp_path, "concurrent_sweep")
    space = {
        "trial": tiny_trial_dict(**{"train.max_steps": 40}),
        "loss.lambda_neural": tune.grid_search([0.0, 0.5, 0.9]),
        "objective.beta": tune.grid_search([0.05, 8.0]),
    }
    scheduler = tune.schedulers.ASHAScheduler(
        metric="mse", mode="min", time_attr="training_iteration", grace_period=1, reduction_factor=2, max_t=4,
    )
    # Another client reads the store all along, as `raysweep ui` would.
    stop = threading.Event()
    reads: list[int] = []

    def read_loop() -> None:
        reader = make_client(callback.tracking_uri)
        while not stop.is_set():
            exp = reader.get_experiment_by_name("concurrent_sweep")
            if exp is not None:
                reads.append(len(reader.search_runs([exp.experiment_id])))
            stop.wait(0.1)

    reader = threading.Thread(target=read_loop, daemon=True)
    reader.start()
    try:
        results = run_sweep(tmp_path, "concurrent_sweep", space, callback, max_concurrent=6, scheduler=scheduler)
    finally:
        stop.set()
        reader.join(timeout=10)
    assert not results.errors and callback.errors == 0
    assert reads, "the reader ran during the sweep"
    client = make_client(callback.tracking_uri)
    by_trial = {r.data.tags[TRIAL_ID_TAG]: r for r in _children(client, callback)}
    assert len(by_trial) == 6
    statuses = []
    for res in results:
        run = by_trial[res.metrics["trial_id"]]
        validations = _tune_steps(res)
        for key in ("rate", "mse", "step", "psnr"):
            assert _history_steps(client, run.info.run_id, key) == validations, key
        status = run.data.tags[STATUS_TAG]
        statuses.append(status)
        # ASHA's max_t equals the trial length here, so it also "stops" the trials that reach it.
        assert status == ("finished" if validations[-1] == 40 else "early_stopped")
        assert run.info.status == ("FINISHED" if status == "finished" else "KILLED")
        assert "config.yaml" in {f.path for f in client.list_artifacts(run.info.run_id)}
    assert "early_stopped" in statuses, "ASHA stopped some trials"
    captured = capfd.readouterr()
    text = captured.out + captured.err + caplog.text
    assert "database is locked" not in text.lower()
    assert "raysweep tracking:" not in caplog.text


def test_restored_sweep_continues_its_parent_and_child_runs(tmp_path: Path) -> None:
    """An errored trial resumed by ``Tuner.restore`` (what ``raysweep resume`` does) continues the
    same parent and child run; the callback itself comes back from Tune's pickled run config."""
    callback = mlflow_callback(tmp_path, "restore_sweep")
    space = {
        "trial": tiny_trial_dict(**{"train.max_steps": 40}),
        "_fail_at_step": 20,
        "_fail_marker": str(tmp_path / "failed_once"),
    }
    first = run_sweep(tmp_path, "restore_sweep", space, callback, max_failures=0, max_concurrent=1)
    assert len(first.errors) == 1
    client = make_client(callback.tracking_uri)
    (run,) = _children(client, callback)
    assert run.data.tags[STATUS_TAG] == "error" and run.info.status == "FAILED"
    assert "error.txt" in {f.path for f in client.list_artifacts(run.info.run_id)}

    restored = tune.Tuner.restore(str(tmp_path / "restore_sweep"), trainable, resume_errored=True).fit()
    assert not restored.errors
    parents = client.search_runs([run.info.experiment_id], "tags.`raysweep.role` = 'sweep'")
    assert [p.info.run_id for p in parents] == [callback.parent_run_id]
    tags = parents[0].data.tags
    assert tags["raysweep.trials.finished"] == "1" and "raysweep.trials.error" not in tags
    (again,) = _children(client, callback)
    assert again.info.run_id == run.info.run_id
    assert again.data.tags[STATUS_TAG] == "finished" and again.info.status == "FINISHED"
    for key in ("rate", "mse", "step"):
        assert _history_steps(client, run.info.run_id, key) == [10, 20, 30, 40], key
