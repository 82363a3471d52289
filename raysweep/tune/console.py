"""What a sweep's driver prints while Tune runs: a status table a person can read.

Ray 2.60's default console (its "new output engine", ``RAY_AIR_NEW_OUTPUT=1``) prints every trial's
whole configuration when the trial starts: some 60 lines per trial for raysweep's flat trial
configs, 15,000 lines for a 260-trial sweep. This module switches Tune to its public
:class:`ray.tune.CLIReporter` instead (which the new engine ignores, hence ``RAY_AIR_NEW_OUTPUT=0``,
as Ray's own examples do for a custom reporter), showing:

- every :data:`REPORT_SECONDS` seconds, and when the sweep ends, the status table: one row per
  trial (at most :data:`MAX_ROWS` while running), with only the keys the sweep varies and the key
  metrics (:data:`raysweep.names.KEY_METRICS`; plus ``rate_error`` for a matched-rate sweep);
- one line when a trial starts (its swept values) and one when it ends (its key metrics), from
  :class:`TrialLines`; Ray's and Optuna's INFO logging is turned down to warnings.

A trial's full configuration is in its folder (``params.json``, ``train/config.yaml``) and on its
MLflow run, not on the terminal. Set ``RAY_AIR_NEW_OUTPUT=1`` to get Ray's default console back.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from ray import tune

from raysweep.names import KEY_METRICS

REPORT_SECONDS = 30
MAX_ROWS = 20
RAY_LOGGING_LEVEL = logging.WARNING  # Ray's INFO lines (instance started, files synced) say nothing here


def quiet_driver() -> None:
    """Environment of a sweep's driver, set before Tune starts (a value the user set is kept)."""
    # Tiny sweeps checkpoint every few seconds, which makes Tune warn about snapshot frequency on
    # every trial; that warning is about large experiments and says nothing useful here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The legacy output engine: the one that honours RunConfig(progress_reporter=...).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Optuna logs every study it creates and every trial it is told of: a line per trial.
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def progress_reporter(parameters: Sequence[str], metrics: Sequence[str] = KEY_METRICS) -> tune.CLIReporter:
    """Tune's status table with the swept `parameters` (dotted trial keys) and `metrics` only."""
    return tune.CLIReporter(
        parameter_columns=list(parameters), metric_columns={"training_iteration": "iter", **{m: m for m in metrics}},
        max_report_frequency=REPORT_SECONDS, max_progress_rows=MAX_ROWS, max_column_length=30,
        print_intermediate_tables=True,
    )


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class TrialLines(tune.Callback):
    """One line per trial start (its swept values) and one per trial end (its key metrics).

    Args:
        parameters: the dotted trial keys the sweep varies.
        metrics: the metrics an ending trial's line shows.
    """

    def __init__(self, parameters: Sequence[str], metrics: Sequence[str] = KEY_METRICS) -> None:
        self.parameters, self.metrics = list(parameters), list(metrics)

    def _say(self, text: str) -> None:
        print(f"raysweep: trial {text}", file=sys.stdout, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A cell that leaves a swept key unset (None: the trial's default) does not list it.
        swept = ", ".join(f"{k}={_value(trial.config[k])}" for k in self.parameters
                          if trial.config.get(k) is not None)
        self._say(f"{trial.trial_id} started" + (f": {swept}" if swept else ""))

    def _end(self, trial: Any, how: str) -> str:
        result = trial.last_result or {}
        shown = ", ".join(f"{m} {_value(result[m])}" for m in self.metrics if m in result)
        validations = result.get("training_iteration", 0)
        return f"{trial.trial_id} {how} after {validations} validation{'s' * (validations != 1)}" + (
            f": {shown}" if shown else "")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(self._end(trial, "ended"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say(self._end(trial, "failed") + f" (error: {getattr(trial, 'error_file', None)})")
