"""`raysweep sync`: MLflow rebuilt from a sweep's own files, idempotently, with real SQLite stores.

A sweep tracked normally needs nothing (sync writes nothing); the same sweep synced into an empty
store gets one parent and one child per trial with the same params, every validation step once,
the final artifacts and statuses, and a second sync changes nothing. Bad input exits 2 in one line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import free_port, init_ray
from test_outage import mlflow_state
from tiny_trial import tiny_trial_tree

from raysweep.cli import main
from raysweep.tracking.store import PARENT_TAG, ROLE_SWEEP, ROLE_TAG, TRIAL_ID_TAG, make_client, search_all
from raysweep.tune.load import sweep_from_dict
from raysweep.tune.run import run_sweep


@pytest.fixture(scope="module")
def ray_two_cpus() -> Iterator[None]:
    import ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


def _children(uri: str, name: str) -> dict[str, Any]:
    """Trial id -> child run of the sweep's only parent run."""
    client = make_client(uri)
    experiment_id = client.get_experiment_by_name(name).experiment_id
    parents = search_all(client, [experiment_id], f"tags.`{ROLE_TAG}` = '{ROLE_SWEEP}'")
    assert len(parents) == 1
    runs = search_all(client, [experiment_id], f"tags.`{PARENT_TAG}` = '{parents[0].info.run_id}'")
    return {run.data.tags[TRIAL_ID_TAG]: run for run in runs}


def _summary(uri: str, name: str) -> dict[str, Any]:
    """Per trial: params, status, the steps of every metric, artifact names."""
    client = make_client(uri)
    out = {}
    for trial_id, run in _children(uri, name).items():
        steps = {key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics}
        out[trial_id] = (dict(run.data.params), run.info.status, run.data.tags["raysweep.status"], steps,
                         sorted(a.path for a in client.list_artifacts(run.info.run_id)))
    return out


def test_sync_refuses_what_is_not_a_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "sweep.yaml" in lines[0] and str(tmp_path) in lines[0]


@pytest.mark.slow
def test_sync_rebuilds_a_sweep_in_an_empty_store(ray_two_cpus: None, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "runs"
    sweep = sweep_from_dict({"name": "synced", "trial": tiny_trial_tree(),
                             "search": {"mode": "grid", "grid": {"objective.beta": [0.0625, 0.25]}}})
    assert run_sweep(sweep, storage=str(storage), verbose=0).complete
    sweep_dir = storage / "synced"
    own = f"sqlite:///{storage / 'mlflow.db'}"

    before = mlflow_state(own, "synced")
    assert main(["sync", str(sweep_dir)]) == 0  # tracked without an outage: nothing to write
    assert "nothing written" in capsys.readouterr().out
    assert mlflow_state(own, "synced") == before

    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert main(["sync", str(sweep_dir), "--tracking-uri", fresh]) == 0
    assert "created 3 runs" in capsys.readouterr().out
    assert _summary(fresh, "synced") == _summary(own, "synced")
    rebuilt = mlflow_state(fresh, "synced")
    assert main(["sync", str(sweep_dir), "--tracking-uri", fresh]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert mlflow_state(fresh, "synced") == rebuilt

    # A server that does not answer: one line naming it, in seconds, nothing written.
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert main(["sync", str(sweep_dir), "--tracking-uri", dead]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and dead in lines[0] and "no MLflow tracking server answers" in lines[0]
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_sync_restores_every_tag_the_callback_writes(ray_two_cpus: None, tmp_path: Path) -> None:
    """A retried trial (``raysweep.failures``) tracked by the callback, then rebuilt by sync in an
    empty store: every tag of every run is the same (MLflow's own bookkeeping tags aside), and an
    older sweep's ``tracking_pending.json`` is read by the notice and removed."""
    from sweep_helpers import run_sweep as run_tuner
    from sweep_helpers import tiny_trial_dict

    from raysweep.tracking import journal
    from raysweep.tracking.mlflow import mlflow_callback
    from raysweep.tracking.results import flatten_params
    from raysweep.tracking.sync import SweepRecord, sync_sweep

    callback = mlflow_callback(tmp_path, "retried")
    space = {"trial": tiny_trial_dict(**{"train.max_steps": 40}), "_fail_at_step": 30,
             "_fail_marker": str(tmp_path / "failed_once")}
    assert not run_tuner(tmp_path, "retried", space, callback, max_failures=1, max_concurrent=1).errors
    sweep_dir = str(tmp_path / "retried")
    # A raw Tuner names the trial's folder trainable_<id>_...; raysweep's sweeps (what sync reads) name it <id>.
    [folder] = [d for d in (tmp_path / "retried").iterdir() if (d / "params.json").is_file()]
    folder.rename(folder.with_name(folder.name.split("_", 1)[1].rsplit("_", 3)[0]))
    (tmp_path / "retried" / journal.LEGACY_PENDING_FILE).write_text('{"unsent": {"t1": ["result", "complete"]}}')
    assert journal.read_state(sweep_dir).unsent == 2 and "raysweep sync" in (journal.unsent_notice(sweep_dir) or "")

    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    record = SweepRecord(name="retried", tracking_uri=None, experiment="retried", config={}, flat_params=flatten_params)
    sync_sweep(sweep_dir, record, tracking_uri=fresh)

    def tags(uri: str) -> dict[str, dict[str, str]]:
        client = make_client(uri)
        experiment_id = client.get_experiment_by_name("retried").experiment_id
        own = {"mlflow.parentRunId", "mlflow.runName", "mlflow.user", "mlflow.source.name", "mlflow.source.type",
               "mlflow.source.git.commit", "mlflow.log-model.history"}
        return {run.data.tags.get(TRIAL_ID_TAG, "parent"): {k: v for k, v in run.data.tags.items() if k not in own}
                for run in search_all(client, [experiment_id])}

    tracked, rebuilt = tags(callback.tracking_uri), tags(fresh)
    [trial_id] = [key for key in tracked if key != "parent"]
    assert tracked[trial_id]["raysweep.failures"] == "1"
    assert rebuilt == tracked
    assert not (tmp_path / "retried" / journal.LEGACY_PENDING_FILE).exists()
    assert journal.unsent_notice(sweep_dir) is None
