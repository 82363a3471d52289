"""The sweep's console: Tune's status table with the swept keys and key metrics only, one line per
trial start and end, never a trial's whole configuration."""

from __future__ import annotations

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


@pytest.mark.slow
def test_a_sweep_prints_no_trial_configuration(ray_address: str, tmp_path: Path,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    raw = tiny_sweep("quiet", search={"grid": {"objective.beta": [0.05, 0.1]}})
    outcome = run_sweep(sweep_from_dict(raw), storage=str(tmp_path), verbose=1)
    out = capfd.readouterr().out
    assert outcome.complete and len(outcome.rows) == 2
    for row in outcome.rows:
        assert out.count(f"raysweep: trial {row['trial']} started") == 1
        assert out.count(f"raysweep: trial {row['trial']} ended") == 1
    assert "== Status ==" in out and "objective.beta" in out and "distortion_sse" in out
    assert "data.image_size" not in out and "started with configuration" not in out
    assert len(out.splitlines()) < 60, out
