"""What a sweep's driver prints while Tune runs: one line per trial start and end, and one progress line.

Ray 2.60's default console (its "new output engine", ``RAY_AIR_NEW_OUTPUT=1``) prints every trial's
whole configuration when the trial starts: some 60 lines per trial for raysweep's flat trial
configs, 15,000 lines for a 260-trial sweep. This module switches Tune to its public
:class:`ray.tune.CLIReporter` instead (which the new engine ignores, hence ``RAY_AIR_NEW_OUTPUT=0``,
as Ray's own examples do for a custom reporter), showing:

- one line when a trial starts (its swept values) and one when it ends (its key metrics), from
  :class:`TrialLines`; Ray's and Optuna's INFO logging is turned down to warnings;
- a progress line (:class:`Progress`): trials finished / running / pending / failed, the time
  elapsed and the time left estimated from the trials finished so far. On a terminal it is
  rewritten in place; in a log (no terminal) it is printed at most every :data:`PROGRESS_SECONDS`
  seconds, when it changed, and once at the end;
- with ``--verbose`` only (``verbose=2``), Tune's status table besides, every
  :data:`REPORT_SECONDS` seconds and at the end: one row per trial (at most :data:`MAX_ROWS` while
  running), with only the keys the sweep varies and the key metrics
  (:data:`raysweep.names.KEY_METRICS`; plus ``rate_error`` for a matched-rate sweep).

A trial's full configuration is in its folder (``params.json``, ``train/config.yaml``) and on its
MLflow run, not on the terminal. Set ``RAY_AIR_NEW_OUTPUT=1`` to get Ray's default console back.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ray import tune

from raysweep.names import KEY_METRICS

REPORT_SECONDS = 30
MAX_ROWS = 20
PROGRESS_SECONDS = 60  # most often the progress line is printed into a log
TABLE_VERBOSITY = 2  # verbose at which Tune's status table is printed too (`--verbose`)
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


def tune_verbosity(verbose: int) -> int:
    """``RunConfig(verbose=...)``: Tune's own console (its status table) only at ``--verbose``."""
    return 1 if verbose >= TABLE_VERBOSITY else 0


def _clock(seconds: float) -> str:
    """``h:mm:ss`` (``m:ss`` under an hour)."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress(tune.Callback):
    """The sweep's progress line (see the module docstring).

    Args:
        total: the trials the run should end with; None when the search decides (matched rate).
        stream: where it is printed (standard output).
        in_place: rewrite the line in place (default: whether `stream` is a terminal).
        every_s: in a log, the least time between two printed lines.
        clock: seconds, monotonic (for the tests).
    """

    def __init__(self, total: int | None, stream: TextIO | None = None, in_place: bool | None = None,
                 every_s: float = PROGRESS_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.every_s, self.clock = total, every_s, clock
        self.stream = stream
        self.in_place = in_place
        self.started = clock()
        self.counts: dict[str, int] = {}
        self.finished_before: int | None = None  # finished when this run began (a resume keeps them)
        self.shown = ""  # the line on screen (in place) or last printed (log)
        self.printed_at = -float("inf")

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    def on_terminal(self) -> bool:
        """Whether the line is rewritten in place (its stream is a terminal, unless `in_place` said)."""
        if self.in_place is None:
            self.in_place = bool(getattr(self._out(), "isatty", lambda: False)())
        return self.in_place

    # ------------------------------------------------------------------------------ the line
    def line(self) -> str:
        """The progress line of the counts seen last."""
        c = self.counts
        done, running, failed = c.get("TERMINATED", 0), c.get("RUNNING", 0) + c.get("PAUSED", 0), c.get("ERROR", 0)
        known = sum(c.values())
        pending = c.get("PENDING", 0) + (max(0, self.total - known) if self.total is not None else 0)
        elapsed = self.clock() - self.started
        of = f"/{self.total}" if self.total is not None else ""
        text = (f"raysweep: {done}{of} finished, {running} running, {pending} pending, {failed} failed; "
                f"{_clock(elapsed)} elapsed")
        ended_here = done + failed - (self.finished_before or 0)
        left = running + pending
        if left and ended_here > 0 and self.total is not None:
            text += f", about {_clock(elapsed / ended_here * left)} left"
        elif not left and known:
            text += ", none left"
        return text

    def _count(self, trials: Sequence[Any]) -> None:
        counts: dict[str, int] = {}
        for trial in trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        self.counts = counts
        if self.finished_before is None:
            self.finished_before = counts.get("TERMINATED", 0) + counts.get("ERROR", 0)

    def clear(self) -> None:
        """Take the line off the terminal before another line is printed (nothing in a log)."""
        if self.on_terminal() and self.shown:
            self._out().write("\r\x1b[2K")
            self._out().flush()
            self.shown = ""

    def show(self, final: bool = False) -> None:
        """Print the line: in place on a terminal; in a log when it changed and `every_s` passed (or `final`)."""
        text = self.line()
        if self.on_terminal():
            self._out().write("\r\x1b[2K" + text + ("\n" if final else ""))
            self._out().flush()
            self.shown = "" if final else text
            return
        counts_part = text.split(";")[0]
        if final or (counts_part != self.shown and self.clock() - self.printed_at >= self.every_s):
            print(text, file=self._out(), flush=True)
            self.shown, self.printed_at = counts_part, self.clock()

    # --------------------------------------------------------------------------- Tune hooks
    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._count(trials)
        if self.counts:
            self.show()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._count(trials)
        self.show(final=True)


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class TrialLines(tune.Callback):
    """One line per trial start (its swept values) and one per trial end (its key metrics).

    Args:
        parameters: the dotted trial keys the sweep varies.
        metrics: the metrics an ending trial's line shows.
        progress: the progress line to keep below the trial lines on a terminal.
    """

    def __init__(self, parameters: Sequence[str], metrics: Sequence[str] = KEY_METRICS,
                 progress: Progress | None = None) -> None:
        self.parameters, self.metrics, self.progress = list(parameters), list(metrics), progress

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.clear()  # a terminal's progress line goes below the trial's line
        print(f"raysweep: trial {text}", file=sys.stdout, flush=True)
        if self.progress is not None and self.progress.on_terminal():
            self.progress.show()

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
