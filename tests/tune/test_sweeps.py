"""Real sweeps on a local Ray instance (2 CPUs): grid, DDP through TorchTrainer, ASHA, Optuna."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tune_helpers import tiny_sweep

from raysweep.tune.load import sweep_from_dict
from raysweep.tune.run import run_sweep
from raysweep.tune.summary import SweepOutcome

pytestmark = pytest.mark.slow


def _run(raw: dict, storage: Path) -> SweepOutcome:
    return run_sweep(sweep_from_dict(raw), storage=str(storage), verbose=0)


def _validations(outputs: str) -> list[int]:
    lines = (Path(outputs) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def test_grid_sweep_finishes_every_trial_and_records_divergence(ray_address: str, tmp_path: Path) -> None:
    # 3 learning rates (one absurd: the loss turns non-finite at once) x 2 betas = 6 trials.
    raw = tiny_sweep("grid", search={
        "cells": [{"train.lr": 2e-3}, {"train.lr": 3e-3}, {"train.lr": 1e6}],
        "grid": {"objective.beta": [0.5, 2.0]},
    })
    outcome = _run(raw, tmp_path)
    assert outcome.num_errors == 0
    assert len(outcome.rows) == 6
    by_status: dict[str, list[dict]] = {}
    for row in outcome.rows:
        by_status.setdefault(row["status"], []).append(row)
    assert len(by_status["finished"]) == 4 and len(by_status["diverged"]) == 2
    assert {row["train.lr"] for row in by_status["diverged"]} == {1e6}
    for row in by_status["finished"]:
        final = json.loads((Path(row["outputs"]) / "final.json").read_text())
        assert final["status"] == "finished" and final["step"] == 20
        assert row["step"] == 20 and row["rate"] > 0 and row["psnr"] > 0
        assert _validations(row["outputs"]) == [10, 20]
        trial_dir = Path(row["outputs"]).parent
        assert len(list(trial_dir.glob("checkpoint_*"))) == 2  # Tune kept num_to_keep checkpoints
        assert (trial_dir / "params.json").is_file()
    for row in by_status["diverged"]:
        assert json.loads((Path(row["outputs"]) / "final.json").read_text())["status"] == "diverged"
    assert (Path(outcome.sweep_dir) / "sweep.yaml").is_file()


def test_two_worker_ddp_trial_runs_through_torch_trainer(ray_address: str, tmp_path: Path) -> None:
    raw = tiny_sweep("ddp", resources={"workers": 2, "cpus_per_worker": 1})
    outcome = _run(raw, tmp_path)
    [row] = outcome.rows
    assert row["status"] == "finished" and row["step"] == 20 and row["iterations"] == 2
    final = json.loads((Path(row["outputs"]) / "final.json").read_text())
    assert final["world_size"] == 2  # the loop ran under a 2-rank gloo process group
    assert _validations(row["outputs"]) == [10, 20]
    train_run = Path(row["outputs"]).parent / "ray_train"
    assert list(train_run.glob("checkpoint_*")), "the TorchTrainer run stores its checkpoints in the trial directory"


def test_asha_stops_weak_trials_early(ray_address: str, tmp_path: Path) -> None:
    # Strong learning rates first, so the weak ones meet recorded rungs at their first validation.
    raw = tiny_sweep("asha", search={
        "cells": [{"train.lr": 5e-3}, {"train.lr": 3e-3}, {"train.lr": 1e-7}, {"train.lr": 1e-8}],
        "scheduler": {"type": "asha", "metric": "psnr", "mode": "max", "grace_period": 1, "reduction_factor": 2},
    })
    raw["trial"]["train"].update(max_steps=60, val_every=10)
    outcome = _run(raw, tmp_path)
    rows = {row["train.lr"]: row for row in outcome.rows}
    for weak in (1e-7, 1e-8):
        assert rows[weak]["status"] == "stopped", rows[weak]
        assert rows[weak]["iterations"] < 6
    assert any(row["status"] == "finished" and row["iterations"] == 6 for row in outcome.rows)


def test_optuna_runs_one_study_per_grid_cell(ray_address: str, tmp_path: Path) -> None:
    import optuna

    raw = tiny_sweep("optuna", search={
        "mode": "optuna",
        "grid": {"objective.beta": [0.5, 2.0]},
        "distributions": {"train.lr": {"loguniform": [1e-4, 1e-2]}},
        "num_samples": 2,
        "optuna": {"metric": "psnr", "mode": "max"},
    })
    outcome = _run(raw, tmp_path)
    assert len(outcome.rows) == 4 and all(row["status"] == "finished" for row in outcome.rows)
    assert all(1e-4 <= row["train.lr"] <= 1e-2 for row in outcome.rows)
    assert len({row["train.lr"] for row in outcome.rows}) == 4
    storage = f"sqlite:///{outcome.sweep_dir}/optuna.db"
    studies = optuna.get_all_study_summaries(storage)
    assert len(studies) == 2
    for summary in studies:
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(complete) == 2 and all(t.value is not None for t in complete)
