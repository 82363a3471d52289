"""The sweep's console: one line per trial start and end and one progress line (Tune's status table, with the
swept keys and key metrics only, at --verbose), never a trial's whole configuration."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from tune_helpers import tiny_sweep

from raysweep.tune import console
from raysweep.tune.load import sweep_from_dict
from raysweep.tune.run import run_sweep


def test_trial_lines_are_one_per_start_and_end(capsys: pytest.CaptureFixture[str]) -> None:
    lines = console.TrialLines(["objective.beta", "objective.geco.target_rate"])
    trial = SimpleNamespace(trial_id="abc", config={"objective.beta": 0.5, "train.lr": 1e-3,
                                                    "objective.geco.target_rate": None},  # a cell leaving it unset
                            last_result={"rate": 12.34567, "psnr": 20.0, "training_iteration": 2}, error_file=None)
    lines.on_trial_start(0, [], trial)
    lines.on_trial_complete(0, [], trial)
    out = capsys.readouterr().out.splitlines()
    assert out == ["raysweep: trial abc started: objective.beta=0.5",
                   "raysweep: trial abc ended after 2 validations: rate 12.35, psnr 20"]


def _trials(*statuses: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(status=status) for status in statuses]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_progress_line_in_a_log_is_printed_at_most_once_a_minute() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = console.Progress(6, stream=out, in_place=False, clock=clock)
    progress.on_step_end(0, _trials("RUNNING", "RUNNING"))
    clock.now += 20
    progress.on_step_end(1, _trials("TERMINATED", "RUNNING", "RUNNING"))  # changed, but within the minute
    clock.now += 40
    progress.on_step_end(2, _trials("TERMINATED", "TERMINATED", "RUNNING", "ERROR"))
    progress.on_step_end(3, _trials("TERMINATED", "TERMINATED", "RUNNING", "ERROR"))  # unchanged
    clock.now += 30
    progress.on_experiment_end(_trials(*["TERMINATED"] * 5, "ERROR"))
    assert out.getvalue().splitlines() == [
        "raysweep: 0/6 finished, 2 running, 4 pending, 0 failed; 0:00 elapsed",
        # 3 trials ended in 60 s with 3 still to run (1 running, 2 never started): about 60 s left
        "raysweep: 2/6 finished, 1 running, 2 pending, 1 failed; 1:00 elapsed, about 1:00 left",
        "raysweep: 5/6 finished, 0 running, 0 pending, 1 failed; 1:30 elapsed, none left",
    ]


def test_the_progress_line_on_a_terminal_is_rewritten_in_place_below_the_trial_lines(
        capsys: pytest.CaptureFixture[str]) -> None:
    out, clock = io.StringIO(), _Clock()
    progress = console.Progress(None, stream=out, in_place=True, clock=clock)  # a matched-rate sweep: no total
    lines = console.TrialLines(["objective.beta"], progress=progress)
    progress.on_step_end(0, _trials("RUNNING"))
    lines.on_trial_complete(0, [], SimpleNamespace(trial_id="t1", config={}, last_result={"training_iteration": 1}))
    progress.on_experiment_end(_trials("TERMINATED"))
    screen = out.getvalue()
    assert screen.startswith("\r\x1b[2Kraysweep: 0 finished, 1 running, 0 pending, 0 failed; 0:00 elapsed")
    assert screen.count("\r\x1b[2K") == 4  # drawn, cleared for the trial's line, drawn again, final
    assert screen.endswith("raysweep: 1 finished, 0 running, 0 pending, 0 failed; 0:00 elapsed, none left\n")
    assert capsys.readouterr().out == "raysweep: trial t1 ended after 1 validation\n"


@pytest.mark.slow
def test_a_sweep_prints_trial_lines_and_progress_and_the_table_only_when_verbose(
        ray_address: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    raw = tiny_sweep("quiet", search={"grid": {"objective.beta": [0.05, 0.1]}})
    outcome = run_sweep(sweep_from_dict(raw), storage=str(tmp_path), verbose=1)
    out = capfd.readouterr().out
    assert outcome.complete and len(outcome.rows) == 2
    for row in outcome.rows:
        assert out.count(f"raysweep: trial {row['trial']} started") == 1
        assert out.count(f"raysweep: trial {row['trial']} ended") == 1
    assert "raysweep: 2/2 finished, 0 running, 0 pending, 0 failed;" in out and "none left" in out
    assert "== Status ==" not in out
    assert "data.image_size" not in out and "started with configuration" not in out
    assert len(out.splitlines()) < 15, out

    raw = tiny_sweep("loud", search={"grid": {"objective.beta": [0.05]}})
    run_sweep(sweep_from_dict(raw), storage=str(tmp_path), verbose=2)
    out = capfd.readouterr().out
    assert "== Status ==" in out
    assert "distortion_sse" in out and "data.image_size" not in out
