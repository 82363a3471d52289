"""The driver of a DDP sweep SIGKILLed mid-sweep, its local Ray cleaned up, then ``raysweep resume``:
finished trials are untouched (files and MLflow runs), the others continue from their checkpoints
(their MLflow step history continuous, no step twice), and MLflow holds one parent and one child
per trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import kill_process_group_leftovers, stop_process
from tune_helpers import tiny_sweep, trial_states, write_sweep

from raysweep.cli import main

pytestmark = pytest.mark.slow
RAYSWEEP = str(Path(sys.executable).with_name("raysweep"))
STEPS = list(range(20, 201, 20))  # 10 validations: time to catch a trial mid-run


def _runs(uri: str, experiment: str) -> tuple[list[Any], dict[str, Any]]:
    """(parent runs, trial id -> child run) of `experiment`."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("raysweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("raysweep.role") == "trial"]
    by_trial = {r.data.tags["raysweep.trial_id"]: r for r in children}
    assert len(by_trial) == len(children), "two MLflow runs for one trial"
    return parents, by_trial


def _history(uri: str, run_id: str, metric: str = "psnr") -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, metric))


def _session_pids(pid: int) -> set[int]:
    """`pid` and every process below it (the local Ray it started: GCS, raylet, workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def test_resume_after_the_driver_of_a_ddp_sweep_is_killed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = tiny_sweep("killed-ddp", search={"grid": {"objective.beta": [0.5, 1.0, 2.0]}},
                     resources={"workers": 2, "cpus_per_worker": 1}, tracking={"uri": uri})
    raw["trial"]["train"].update(max_steps=STEPS[-1], val_every=20)
    path = write_sweep(tmp_path, raw)
    sweep_dir = tmp_path / "runs" / "killed-ddp"
    log = tmp_path / "driver.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        # Its own process group: the local Ray it starts (GCS, raylet, workers) is in it too.
        driver = subprocess.Popen([RAYSWEEP, "sweep", str(path), "--storage", str(tmp_path / "runs")],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path, env=env)
    session: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:
            session |= _session_pids(driver.pid)
            states = trial_states(sweep_dir)
            finished = [t for t, s in states.items() if s == "TERMINATED"]
            # A trial whose Train run holds a checkpoint and that has not ended (no final.json).
            checkpointed = [d.parent.name for d in sweep_dir.glob("*/ray_train") if list(d.glob("checkpoint_*"))
                            and states.get(d.parent.name) != "TERMINATED"
                            and not (d.parent / "train" / "final.json").exists()]
            if finished and checkpointed:
                break
            time.sleep(0.2)
        assert driver.poll() is None and finished and checkpointed, log.read_text()[-3000:]
        session |= _session_pids(driver.pid)
        before_files = {t: (sweep_dir / t / "train" / "final.json").stat().st_mtime_ns for t in finished}
        _, runs_before = _runs(uri, "killed-ddp")
        before_runs = {t: (runs_before[t].info.run_id, runs_before[t].info.end_time,
                           _history(uri, runs_before[t].info.run_id)) for t in finished}
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        stop_process(driver)
        kill_process_group_leftovers(driver.pid)
        for pid in session:  # what left the group (Ray's reaper, workers) goes too, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    resume_log = tmp_path / "resume.log"
    with open(resume_log, "w") as out:
        resumed = subprocess.Popen([RAYSWEEP, "resume", str(sweep_dir)], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=tmp_path, env=env)
    try:
        resumed.wait(timeout=420)
    finally:
        stop_process(resumed)
        kill_process_group_leftovers(resumed.pid)
    assert resumed.returncode == 0, resume_log.read_text()[-3000:]

    states = trial_states(sweep_dir)
    assert len(states) == 3 and set(states.values()) == {"TERMINATED"}, states
    # Validations the killed driver had not yet written to MLflow (its tracking writes are queued)
    # are not re-reported by trials continuing from a later checkpoint: the resume backfills them
    # from the trials' metrics.jsonl (backfill.backfill_tracking), and a later `raysweep sync` has
    # nothing left to write.
    _, after_resume = _runs(uri, "killed-ddp")
    gaps = {t: sorted(set(STEPS) - {step for step, _ in _history(uri, r.info.run_id)}) for t, r in after_resume.items()}
    print(f"steps missing from MLflow after resume: {gaps}")
    assert not any(gaps.values()), gaps  # the resume backfilled them (backfill.backfill_tracking)
    assert main(["sync", str(sweep_dir)]) == 0
    assert "already complete, nothing written" in capsys.readouterr().out
    parents, runs = _runs(uri, "killed-ddp")
    assert len(parents) == 1 and set(runs) == set(states)
    for trial in finished:  # untouched: same files, same run, same end, same history
        assert (sweep_dir / trial / "train" / "final.json").stat().st_mtime_ns == before_files[trial]
        run = runs[trial]
        assert (run.info.run_id, run.info.end_time, _history(uri, run.info.run_id)) == before_runs[trial]
    missing: dict[str, list[int]] = {}
    for trial, run in runs.items():
        assert run.data.tags["raysweep.status"] == "finished" and run.info.status == "FINISHED"
        for metric in ("psnr", "step"):
            steps = [step for step, _ in _history(uri, run.info.run_id, metric)]
            assert len(steps) == len(set(steps)) and set(steps) <= set(STEPS), (trial, metric, steps)  # none twice
            if steps != STEPS:
                missing[f"{trial}/{metric}"] = sorted(set(STEPS) - set(steps))
        final = json.loads((sweep_dir / trial / "train" / "final.json").read_text())
        assert final["status"] == "finished" and final["step"] == STEPS[-1] and final["world_size"] == 2
        logged = [json.loads(line)["step"] for line in (sweep_dir / trial / "train" / "metrics.jsonl").read_text()
                  .splitlines()]
        assert logged == STEPS, (trial, logged)
    assert not missing, missing
