"""A tracking outage mid-sweep: a real ``mlflow server`` is killed (SIGKILL) after the first result
and started again later on the same port and store. Trials keep training while it is down (Tune's
own callbacks see results and completions during the outage), and afterwards MLflow holds every
trial once, every validation step once and the final artifacts: replayed by the driver's tracking
writer when the server comes back before the sweep ends, backfilled by ``raysweep sync`` when it
comes back after (a second ``sync`` changes nothing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray import tune
from sweep_helpers import free_port, init_ray, stop_process_group, wait_for_health
from tiny_trial import tiny_trial_tree

from raysweep.cli import main
from raysweep.tracking import journal
from raysweep.tracking.store import (
    PARENT_TAG,
    ROLE_SWEEP,
    ROLE_TAG,
    STATUS_TAG,
    TRIAL_ID_TAG,
    make_client,
    search_all,
)
from raysweep.tracking.writer import END_REASON
from raysweep.tune.load import sweep_from_dict
from raysweep.tune.run import run_sweep

pytestmark = pytest.mark.slow
TRIALS = 4
KEPT_ARTIFACTS = {"final.json", "config.yaml", "metrics.jsonl"}


class MlflowServer:
    """A real ``mlflow server`` on a fixed port of 127.0.0.1 over one SQLite store and artifact
    folder, that the test kills and starts again (its own process group each time)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with open(self.folder / "mlflow_server.log", "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
                 "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        wait_for_health(self.url, timeout=180, proc=self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)


class Timeline(tune.Callback):
    """When Tune's loop saw each result and each completion (Tune calls its callbacks in order,
    after raysweep's tracking callback: a blocked tracking callback would delay these)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []
        self.first_result = threading.Event()

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its run config (the event is not picklable)
        return {"events": list(self.events)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.events, self.first_result = state["events"], threading.Event()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.events.append((time.monotonic(), "result", trial.trial_id))
        self.first_result.set()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.events.append((time.monotonic(), "complete", trial.trial_id))

    def between(self, kind: str, start: float, end: float) -> int:
        return sum(1 for t, k, _ in self.events if k == kind and start < t < end)


@pytest.fixture(scope="module")
def ray_two_cpus() -> Iterator[None]:
    import ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def _server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    srv = MlflowServer(tmp_path_factory.mktemp("server"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server(_server: MlflowServer) -> MlflowServer:
    """The module's server, answering (started again if a test left it down); each test uses its
    own experiment in it."""
    if _server.proc is None or _server.proc.poll() is not None:
        _server.start()
    return _server


def _sweep(name: str, url: str, drain_timeout_s: float) -> Any:
    trial = tiny_trial_tree(**{"train.max_steps": 40, "train.val_every": 10})
    return sweep_from_dict({"name": name, "trial": trial, "search": {"mode": "grid", "seeds": list(range(TRIALS))},
                            "tracking": {"uri": url, "drain_timeout_s": drain_timeout_s}})


def _timed_sweep(sweep: Any, storage: Path, timeline: Timeline) -> float:
    started = time.monotonic()
    outcome = run_sweep(sweep, storage=str(storage), callbacks=[timeline], verbose=0)
    assert outcome.complete, outcome.rows
    return time.monotonic() - started


def _result_steps(trial_dir: Path) -> list[int]:
    return sorted({json.loads(line)["step"] for line in (trial_dir / "result.json").read_text().splitlines()})


def check_tracked(url: str, name: str, sweep_dir: Path) -> None:
    """One parent; one finished child per trial folder; each validation step once; final artifacts."""
    client = make_client(url)
    experiment_id = client.get_experiment_by_name(name).experiment_id
    parents = search_all(client, [experiment_id], f"tags.`{ROLE_TAG}` = '{ROLE_SWEEP}'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["raysweep.trials"] == str(TRIALS)
    children = search_all(client, [experiment_id], f"tags.`{PARENT_TAG}` = '{parents[0].info.run_id}'")
    trial_dirs = {d.name: d for d in sweep_dir.iterdir() if (d / "params.json").is_file()}
    assert len(trial_dirs) == TRIALS
    assert sorted(c.data.tags[TRIAL_ID_TAG] for c in children) == sorted(trial_dirs)
    for child in children:
        trial_dir = trial_dirs[child.data.tags[TRIAL_ID_TAG]]
        expected = _result_steps(trial_dir)
        assert expected == [10, 20, 30, 40]
        for metric in ("step", "rate", "psnr"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, metric)]
            assert sorted(steps) == expected, (metric, steps)
        assert child.data.tags[STATUS_TAG] == "finished" and child.info.status == "FINISHED"
        assert KEPT_ARTIFACTS <= {a.path for a in client.list_artifacts(child.info.run_id)}


def mlflow_state(url: str, name: str) -> dict[str, Any]:
    """Everything MLflow holds for the experiment: each run's status, end time, tags, params,
    every metric's full history and its artifacts with their sizes."""
    client = make_client(url)
    experiment_id = client.get_experiment_by_name(name).experiment_id
    state: dict[str, Any] = {}
    for run in search_all(client, [experiment_id]):
        run_id = run.info.run_id
        history = {key: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))
                   for key in run.data.metrics}
        artifacts = sorted((a.path, a.file_size) for a in client.list_artifacts(run_id))
        state[run_id] = (run.info.status, run.info.end_time, dict(run.data.tags), dict(run.data.params), history,
                         artifacts)
    return state


def test_outage_during_the_sweep_is_replayed(ray_two_cpus: None, server: MlflowServer, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    timeline, times = Timeline(), {}

    def outage() -> None:
        assert timeline.first_result.wait(timeout=300)
        server.kill()
        times["down"] = time.monotonic()
        deadline = times["down"] + 300
        while time.monotonic() < deadline and timeline.between("complete", times["down"], time.monotonic()) < 2:
            time.sleep(0.2)
        server.start()
        times["up"] = time.monotonic()

    controller = threading.Thread(target=outage, daemon=True)
    controller.start()
    try:
        wall = _timed_sweep(_sweep("outage", server.url, 300), tmp_path / "runs", timeline)
    finally:
        controller.join(timeout=400)
    assert "up" in times, "the server was not started again"
    down_s = times["up"] - times["down"]
    # Tune's loop went on while tracking was down: results and completed trials during the outage.
    assert timeline.between("complete", times["down"], times["up"]) >= 2
    assert timeline.between("result", times["down"], times["up"]) >= 4
    err = capsys.readouterr().err
    assert "unreachable" in err and "answers again" in err
    with capsys.disabled():
        print(f"\nsweep of {TRIALS} trials with a {down_s:.1f} s tracking outage: {wall:.1f} s")
    check_tracked(server.url, "outage", tmp_path / "runs" / "outage")  # replayed: no sync needed
    before = mlflow_state(server.url, "outage")
    assert main(["sync", str(tmp_path / "runs" / "outage")]) == 0
    assert "nothing written" in capsys.readouterr().out
    assert mlflow_state(server.url, "outage") == before


def test_outage_past_the_end_is_backfilled_by_sync(ray_two_cpus: None, server: MlflowServer, tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    timeline, times = Timeline(), {}

    def outage() -> None:
        assert timeline.first_result.wait(timeout=300)
        server.kill()
        times["down"] = time.monotonic()

    controller = threading.Thread(target=outage, daemon=True)
    controller.start()
    try:
        wall = _timed_sweep(_sweep("late", server.url, 3), tmp_path / "runs", timeline)
    finally:
        controller.join(timeout=400)
    ended = time.monotonic()
    sweep_dir = tmp_path / "runs" / "late"
    # The whole sweep ran while tracking was down, and ended with one line and the journal.
    assert timeline.between("complete", times["down"], ended) == TRIALS
    state = journal.read_state(str(sweep_dir))
    assert state.unsent and set(state.reasons) == {END_REASON} and not state.interrupted
    notice = [line for line in capfd.readouterr().err.splitlines() if "still unreachable" in line]
    assert len(notice) == 1 and "raysweep sync" in notice[0]
    with capfd.disabled():
        print(f"\nsweep of {TRIALS} trials, tracking down from {times['down'] - ended + wall:.1f} s in to the end: "
              f"{wall:.1f} s")

    server.start()
    assert main(["sync", str(sweep_dir)]) == 0
    assert "created" in capfd.readouterr().out
    check_tracked(server.url, "late", sweep_dir)
    assert not (sweep_dir / journal.JOURNAL_FILE).exists()
    before = mlflow_state(server.url, "late")
    assert main(["sync", str(sweep_dir)]) == 0
    assert "nothing written" in capfd.readouterr().out
    assert mlflow_state(server.url, "late") == before


def _child_tags(url: str, name: str) -> dict[str, dict[str, str]]:
    client = make_client(url)
    experiment_id = client.get_experiment_by_name(name).experiment_id
    return {run.data.tags.get(TRIAL_ID_TAG, "parent"): dict(run.data.tags) for run in search_all(client, [experiment_id])}


def test_driver_killed_mid_outage_is_noticed_and_synced(ray_two_cpus: None, server: MlflowServer, tmp_path: Path,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    import ray
    import yaml

    storage = tmp_path / "runs"
    sweep_dir = storage / "killed"
    trial = tiny_trial_tree(**{"train.max_steps": 100, "train.val_every": 10})
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump({"name": "killed", "trial": trial, "search": {"mode": "grid", "seeds": [0, 1]},
                                    "tracking": {"uri": server.url, "drain_timeout_s": 3}}))
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        driver = subprocess.Popen(
            [str(Path(sys.executable).with_name("raysweep")), "sweep", str(path), "--storage", str(storage),
             "--address", ray.get_runtime_context().gcs_address],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    journal_file = sweep_dir / journal.JOURNAL_FILE
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(sweep_dir.glob("*/result.json")):
            assert driver.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        server.kill()
        while time.monotonic() < deadline and '"outage"' not in (journal_file.read_text() if journal_file.exists() else ""):
            assert driver.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        os.kill(driver.pid, signal.SIGKILL)  # mid-outage: its queue in memory is gone
        driver.wait(timeout=30)
    finally:
        stop_process_group(driver)
    assert journal.read_state(str(sweep_dir)).interrupted == 1

    server.start()
    capfd.readouterr()
    assert main(["resume", str(sweep_dir)]) == 0
    notices = [line for line in capfd.readouterr().err.splitlines() if "unsent jobs" in line]
    assert len(notices) == 1 and f"raysweep sync {sweep_dir}" in notices[0]
    assert main(["sync", str(sweep_dir)]) == 0
    capfd.readouterr()
    client = make_client(server.url)
    experiment_id = client.get_experiment_by_name("killed").experiment_id
    children = search_all(client, [experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")
    trial_dirs = {d.name: d for d in sweep_dir.iterdir() if (d / "params.json").is_file()}
    assert sorted(c.data.tags[TRIAL_ID_TAG] for c in children) == sorted(trial_dirs)  # every trial once
    for child in children:
        expected = _result_steps(trial_dirs[child.data.tags[TRIAL_ID_TAG]])
        assert expected == list(range(10, 101, 10))
        for metric in ("step", "rate", "psnr"):
            assert sorted(m.step for m in client.get_metric_history(child.info.run_id, metric)) == expected
        assert child.data.tags[STATUS_TAG] == "finished" and child.info.status == "FINISHED"
        assert {"raysweep.dataset", "raysweep.loss", "raysweep.model", "raysweep.sweep"} <= set(child.data.tags)
    tags = _child_tags(server.url, "killed")
    parent = tags["parent"]
    assert parent["raysweep.trials"] == "2" and parent["raysweep.trials.finished"] == "2"
    assert parent[STATUS_TAG] == "finished" and "raysweep.tracking_errors" in parent
    assert not journal_file.exists() and journal.unsent_notice(str(sweep_dir)) is None
    before = mlflow_state(server.url, "killed")
    assert main(["sync", str(sweep_dir)]) == 0
    assert "nothing written" in capfd.readouterr().out
    assert mlflow_state(server.url, "killed") == before
