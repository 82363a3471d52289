"""The pieces of the tracking layer that need no Ray: store URIs, names, params, statuses, and the
experiment get-or-create race on a real SQLite store."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from raysweep.errors import RaysweepError
from raysweep.tracking.results import flatten_params, numeric_metrics, reached_end, trial_status
from raysweep.tracking.store import (
    find_experiment,
    get_or_create_experiment,
    make_client,
    metric_name,
    sqlite_path,
    tracking_uri_for,
)


def test_tracking_uri_defaults_to_sqlite_under_storage(tmp_path: Path) -> None:
    uri = tracking_uri_for(tmp_path / "sweeps", None)
    assert uri == f"sqlite:///{(tmp_path / 'sweeps').resolve()}/mlflow.db"
    assert (tmp_path / "sweeps").is_dir()
    assert sqlite_path(uri) == (tmp_path / "sweeps" / "mlflow.db").resolve()


def test_tracking_uri_passes_servers_and_databases_through(tmp_path: Path) -> None:
    assert tracking_uri_for(tmp_path, "http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert tracking_uri_for(None, "sqlite:////x/mlflow.db") == "sqlite:////x/mlflow.db"


@pytest.mark.parametrize(
    ("storage", "uri", "needle"),
    [("/tmp/x", "ftp://host/db", "tracking.uri 'ftp://host/db'"), ("s3://bucket/sweeps", None, "not a local folder"),
     ("/tmp/x", "file:///tmp/x/mlruns", "use sqlite:///"), ("/tmp/x", "./mlruns", "file store is not supported")],
)
def test_tracking_uri_errors_are_one_line(storage: str, uri: str | None, needle: str) -> None:
    with pytest.raises(RaysweepError) as err:
        tracking_uri_for(storage, uri)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_metric_names_are_valid_for_mlflow() -> None:
    assert metric_name("sse/grad_share") == "sse/grad_share"
    assert metric_name("train_lpips/ema_grad_norm") == "train_lpips/ema_grad_norm"
    assert metric_name("a//b/") == "a/b"
    assert metric_name("/./rate(x)") == "rate_x_"
    assert metric_name("") == "_"


def test_flatten_params_overlays_search_axes_on_the_base_trial() -> None:
    config = {
        "trial": {"loss": {"lambda_neural": 0.0, "neural": "lpips"}, "objective": {"beta": 1.0}},
        "loss.lambda_neural": 0.5,
        "_fail_at_step": 30,
    }
    assert flatten_params(config) == {"loss.lambda_neural": 0.5, "loss.neural": "lpips", "objective.beta": 1.0}
    assert flatten_params({"objective": {"geco": {"target_rate": 4.0}}}) == {"objective.geco.target_rate": 4.0}


def test_numeric_metrics_keep_measurements_only() -> None:
    result = {
        "rate": 3.5, "sse/grad_share": 0.4, "mse": float("nan"), "done": False, "training_iteration": 3,
        "config": {"a": 1}, "hostname": "h", "flag": True, "extra": {"x": 1},
    }
    metrics = numeric_metrics(result)
    assert set(metrics) == {"rate", "sse/grad_share", "mse", "extra/x"}
    assert math.isnan(metrics["mse"])


def test_trial_status_from_final_json_result_and_length() -> None:
    params = {"train.max_steps": 40}
    assert trial_status({"status": "diverged"}, {"step": 10}, params, stopped_by_tune=False) == "diverged"
    assert trial_status(None, {"step": 20}, params, stopped_by_tune=True) == "early_stopped"
    assert trial_status(None, {"step": 40}, params, stopped_by_tune=True) == "finished"
    assert trial_status(None, {"step": 20}, params, stopped_by_tune=False) == "finished"
    assert reached_end({"epoch": 2.0}, {"train.epochs": 2}) and not reached_end({"epoch": 1.5}, {"train.epochs": 2})


def test_experiment_creation_race_yields_one_experiment(tmp_path: Path) -> None:
    uri = tracking_uri_for(tmp_path, None)
    ids: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        try:
            client = make_client(uri)
            barrier.wait()
            ids.append(get_or_create_experiment(client, "race"))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(ids) == 6 and len(set(ids)) == 1
    client = make_client(uri)
    names = [e.name for e in client.search_experiments()]
    assert names.count("race") == 1
    experiment = client.get_experiment(ids[0])
    assert experiment.artifact_location.startswith((tmp_path.resolve() / "mlartifacts").as_uri())


def test_deleted_and_unknown_experiments_are_one_line_errors(tmp_path: Path) -> None:
    uri = tracking_uri_for(tmp_path, None)
    client = make_client(uri)
    client.delete_experiment(get_or_create_experiment(client, "gone"))
    with pytest.raises(RaysweepError, match="tracking.experiment 'gone' is deleted"):
        get_or_create_experiment(client, "gone")
    with pytest.raises(RaysweepError, match="--experiment 'nope': no such experiment"):
        find_experiment(client, "nope")


def test_a_file_store_is_refused_in_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """MLflow's file store keeps a replayed batch twice (SQLite once) and MLflow 3 deprecated it:
    refused wherever a tracking URI is given, here ``raysweep report --tracking-uri``."""
    from raysweep.cli import main

    uri = f"file://{tmp_path}/mlruns"
    assert main(["report", "--experiment", "e", "--tracking-uri", uri, "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and uri in lines[0] and "sqlite:///" in lines[0] and "deprecated" in lines[0]
    assert not (tmp_path / "mlruns").exists()
