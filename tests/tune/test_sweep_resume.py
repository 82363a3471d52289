"""Kill a sweep's driver, then `raysweep resume`: the sweep completes and finished trials are not rerun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tune_helpers import tiny_sweep, trial_states, write_sweep

from raysweep.cli import main

pytestmark = pytest.mark.slow
RAYSWEEP = str(Path(sys.executable).with_name("raysweep"))


def _fingerprint(trial_dir: Path) -> dict[str, object]:
    """The loop's outputs byte for byte with their modification times, and Tune's result log
    (which Tune re-syncs on restore, so only its content counts: a rerun would append to it)."""
    outputs = [trial_dir / "train" / "metrics.jsonl", trial_dir / "train" / "final.json"]
    found: dict[str, object] = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in outputs}
    found["result.json"] = (trial_dir / "result.json").read_bytes()
    return found


SEARCHES = {
    "grid": {"grid": {"objective.beta": [0.5, 1.0, 2.0]}, "seeds": [0, 1]},
    # Two Optuna studies (one per cell) of 3 trials each, in the sweep's SQLite storage.
    "optuna": {"mode": "optuna", "grid": {"objective.beta": [0.5, 2.0]}, "num_samples": 3,
               "distributions": {"train.lr": {"loguniform": [1e-3, 1e-2]}}, "optuna": {"metric": "psnr", "mode": "max"}},
}


@pytest.mark.parametrize("mode", list(SEARCHES))
def test_resume_after_the_driver_is_killed(ray_address: str, tmp_path: Path, mode: str) -> None:
    raw = tiny_sweep("resumable", search=SEARCHES[mode])
    raw["trial"]["train"].update(max_steps=60, val_every=20)
    path = write_sweep(tmp_path, raw)
    sweep_dir = tmp_path / "runs" / "resumable"
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        driver = subprocess.Popen(
            [RAYSWEEP, "sweep", str(path), "--storage", str(tmp_path / "runs"), "--address", ray_address],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None:
            if sum(s == "TERMINATED" for s in trial_states(sweep_dir).values()) >= 2:
                break
            time.sleep(0.2)
        assert driver.poll() is None, f"the driver ended before it could be killed:\n{log.read_text()[-3000:]}"
        finished_before = [t for t, s in trial_states(sweep_dir).items() if s == "TERMINATED"]
        before = {t: _fingerprint(sweep_dir / t) for t in finished_before}
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    assert 2 <= len(finished_before) < 6

    assert main(["resume", str(sweep_dir)]) == 0

    states = trial_states(sweep_dir)
    assert len(states) == 6 and set(states.values()) == {"TERMINATED"}
    for trial in finished_before:
        assert _fingerprint(sweep_dir / trial) == before[trial], f"finished trial {trial} was rerun"
    for trial in states:
        final = json.loads((sweep_dir / trial / "train" / "final.json").read_text())
        assert final["status"] == "finished" and final["step"] == 60
        steps = [json.loads(line)["step"] for line in (sweep_dir / trial / "train" / "metrics.jsonl").read_text().splitlines()]
        assert steps == [20, 40, 60], f"trial {trial} logged {steps}"
    if mode == "optuna":
        import optuna

        storage = f"sqlite:///{sweep_dir}/optuna.db"
        for summary in optuna.get_all_study_summaries(storage):
            trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
            complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
            assert len(complete) == 3, [(t.number, t.state.name) for t in trials]
            assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]


def _reopen_trial(sweep_dir: Path, trial_id: str) -> None:
    """Mark `trial_id` as not finished in the newest experiment state (what a driver killed while
    the trial ran leaves), so a resume would continue it from its recorded checkpoint."""
    state_file = sorted(sweep_dir.glob("experiment_state-*.json"))[-1]
    state = json.loads(state_file.read_text())
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        if trial["trial_id"] == trial_id:
            trial["status"] = "PENDING"
            entry[0] = json.dumps(trial)
    state_file.write_text(json.dumps(state))
    (sweep_dir / trial_id / "train" / "final.json").unlink()


def test_resume_checks_the_checkpoint_tune_recorded_not_a_half_written_newer_one(
    ray_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A driver killed while a trial was persisting a checkpoint leaves a newer, half-written
    checkpoint folder that the experiment state never recorded: the resume continues from the
    recorded one (seen in a full test run: the check read the newest folder and refused a good
    resume). Damage to
    the recorded checkpoint itself stops the resume before Ray starts, naming the file."""
    from raysweep.train.checkpoint import STATE_FILE
    from raysweep.tune import ray_shim

    path = write_sweep(tmp_path, tiny_sweep("recorded"))
    assert main(["sweep", str(path), "--storage", str(tmp_path / "runs"), "--address", ray_address]) == 0
    sweep_dir = tmp_path / "runs" / "recorded"
    [trial_id] = trial_states(sweep_dir)
    _reopen_trial(sweep_dir, trial_id)
    recorded = ray_shim.recorded_checkpoints(sorted(sweep_dir.glob("experiment_state-*.json"))[-1].read_text())
    status, checkpoint = recorded[trial_id]
    assert status == "PENDING" and checkpoint is not None
    checkpoint = sweep_dir / trial_id / Path(checkpoint).name
    assert (checkpoint / STATE_FILE).is_file()

    # A newer folder cut short mid-copy (a prefix of a real state.pt), never recorded.
    half = sweep_dir / trial_id / "checkpoint_000099"
    half.mkdir()
    (half / STATE_FILE).write_bytes((checkpoint / STATE_FILE).read_bytes()[:4096])
    capsys.readouterr()
    assert main(["resume", str(sweep_dir), "--address", ray_address]) == 0
    assert trial_states(sweep_dir)[trial_id] == "TERMINATED"
    assert json.loads((sweep_dir / trial_id / "train" / "final.json").read_text())["status"] == "finished"

    # Tune was deleting the recorded checkpoint (num_to_keep) when the driver stopped, and had a newer,
    # intact one (seen in a full test run: a SIGKILLed driver's state pointed at a checkpoint whose
    # state.pt was gone): the trial continues from the newer one instead of the resume being refused.
    _reopen_trial(sweep_dir, trial_id)
    status, recorded_path = ray_shim.recorded_checkpoints(
        sorted(sweep_dir.glob("experiment_state-*.json"))[-1].read_text())[trial_id]
    rotated = sweep_dir / trial_id / Path(recorded_path).name
    # an index past Tune's own counter, so the checkpoints the resumed trial writes never meet it
    newer = rotated.parent / (rotated.name[:-6] + f"{int(rotated.name[-6:]) + 50:06d}")
    shutil.copytree(rotated, newer)
    (rotated / STATE_FILE).unlink()
    capsys.readouterr()
    assert main(["resume", str(sweep_dir), "--address", ray_address]) == 0
    assert f"it continues from {newer.name}" in capsys.readouterr().err
    assert trial_states(sweep_dir)[trial_id] == "TERMINATED"
    assert json.loads((sweep_dir / trial_id / "train" / "final.json").read_text())["status"] == "finished"
    shutil.rmtree(rotated)
    newer.rename(rotated)  # the recorded checkpoint whole again, for the case below

    # The recorded checkpoint damaged: refused in one line, nothing started.
    _reopen_trial(sweep_dir, trial_id)
    status, recorded_path = ray_shim.recorded_checkpoints(
        sorted(sweep_dir.glob("experiment_state-*.json"))[-1].read_text())[trial_id]
    damaged = sweep_dir / trial_id / Path(recorded_path).name / STATE_FILE
    damaged.write_bytes(damaged.read_bytes()[:4096])
    capsys.readouterr()
    assert main(["resume", str(sweep_dir), "--address", ray_address]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and str(damaged) in lines[0] and f"trial {trial_id} cannot continue" in lines[0], err
