"""Warm starts of the matched-rate search: predict a task's log beta from what its neighbours learned.

A task is one (cell, target, seed) (:mod:`.points`). Rate is close to a power law in beta within a
cell (d log R / d log beta between about -0.5 and -0.9 for the tiny VAE), the matched betas of
different lambdas at one target differ by a third at most, and a cell's seeds differ by less, so a
neighbour's converged trials are most of a task's answer. :class:`RatePredictor` keeps every
converged trial of the sweep (log beta, log rate) and predicts a task's log beta from the first of
these sources that has a fact, in this order:

1. ``seed``: the same cell and target at its other seeds;
2. ``target``: the same cell at another target (any seed), moved along the cell's local slope of
   log R on log beta;
3. ``lambda``: another cell at the same target (any seed), the mean over those cells;
4. ``any``: any other cell at any target, along the slope (the weakest: a wide bracket).

Within a source the fact used is the trial whose log rate is nearest log R*, moved to R* along the
slope: ``x* = x + (log R* - log R) / slope``. The slope is the secant of log R on log beta between
R and R* of a cell whose trials span both rates (interpolated between its trials; the task's own
cell first, else the mean over the cells that span them): log R is concave in log beta, so a local
slope at either end misjudges a long move. Without such a cell it is the local slope of the task's
own cell (the two trials nearest log R* at distinct betas), else of all cells pooled, else
:data:`DEFAULT_SLOPE`. A prediction comes with a log-beta half-width: twice the largest error the
same source has made so far (``|predicted - matched|`` over the tasks that matched), at least
:data:`MIN_HALF_WIDTH` tolerance bands, or the source's :data:`PRIOR_HALF_WIDTH` before it has
been measured. No Ray in here; the searchers (:mod:`.searchers`) feed it and ask it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

Task = tuple[str, float, "int | None"]

DEFAULT_SLOPE = -0.7  # d log R / d log beta before any cell has two trials: mid-range of the measured -0.5..-0.9
#: Log-beta half-width of each source before its error has been measured (the seed-to-seed and
#: lambda-to-lambda spreads of the matched betas measured on the tiny VAE, with margin).
PRIOR_HALF_WIDTH = {"seed": 0.15, "target": 0.3, "lambda": 0.35, "any": 0.7}
SOURCES = tuple(PRIOR_HALF_WIDTH)
MIN_HALF_WIDTH = 1.5  # tolerance bands (tolerance / |slope| in log beta): below that a bracket is noise


@dataclass(frozen=True)
class Prediction:
    """A predicted log beta for one task: ``centre`` (log beta), ``half_width`` (log beta), the local
    ``slope`` (d log R / d log beta, < 0) and the ``source`` it came from (see the module docstring)."""

    centre: float
    half_width: float
    slope: float
    source: str


@dataclass
class RatePredictor:
    """Converged trials of a sweep and the errors of its predictions (see the module docstring).

    ``tolerance``: the search's relative tolerance, for the smallest half-width. Feed it with
    :meth:`add` (every converged trial) and :meth:`matched` (each task as it matches)."""

    tolerance: float = 0.05
    facts: dict[Task, list[tuple[float, float]]] = field(default_factory=dict)
    predicted: dict[Task, Prediction] = field(default_factory=dict)
    errors: dict[str, list[float]] = field(default_factory=dict)

    def add(self, task: Task, log_beta: float, rate: float) -> None:
        """A converged trial of `task` at ``log_beta`` with ``rate`` nats (collapsed rates skipped)."""
        if math.isfinite(rate) and rate > 0.01 * task[1] and math.isfinite(log_beta):
            self.facts.setdefault(task, []).append((log_beta, math.log(rate)))

    def matched(self, task: Task, log_beta: float) -> None:
        """`task` matched at ``log_beta``: measure the error of the prediction made for it, if any."""
        pred = self.predicted.get(task)
        if pred is not None:
            self.errors.setdefault(pred.source, []).append(abs(pred.centre - log_beta))

    def slope(self, cell: str | None, ly: float) -> float:
        """Local d log R / d log beta near log rate `ly`: of `cell`'s trials, else all cells', else the default."""
        for pool in ([f for t, fs in self.facts.items() if t[0] == cell for f in fs] if cell else [],
                     [f for fs in self.facts.values() for f in fs]):
            pts = sorted(pool, key=lambda p: abs(p[1] - ly))
            for i, (x1, y1) in enumerate(pts):
                for x2, y2 in pts[i + 1:]:
                    if abs(x2 - x1) > 1e-6:
                        s = (y2 - y1) / (x2 - x1)
                        if s < 0:  # noise can tilt two close trials the wrong way: then keep looking
                            return max(-3.0, min(-0.1, s))
                        break
        return DEFAULT_SLOPE

    def _interpolated(self, cell: str, ly: float) -> float | None:
        """Log beta at log rate `ly` on `cell`'s trials, between the two that bracket it (None: none do)."""
        pts = sorted(f for t, fs in self.facts.items() if t[0] == cell for f in fs)
        for (x1, y1), (x2, y2) in zip(pts, pts[1:], strict=False):
            if min(y1, y2) <= ly <= max(y1, y2) and abs(y2 - y1) > 1e-9:
                return x1 + (ly - y1) * (x2 - x1) / (y2 - y1)
        return None

    def secant(self, cell: str | None, y_from: float, y_to: float) -> float | None:
        """d log R / d log beta between log rates `y_from` and `y_to`: `cell`'s, else the mean of the
        cells whose trials span both; None when none does."""
        slopes: dict[str, float] = {}
        for c in {t[0] for t in self.facts}:
            xa, xb = self._interpolated(c, y_from), self._interpolated(c, y_to)
            if xa is not None and xb is not None and abs(xb - xa) > 1e-6 and (y_to - y_from) / (xb - xa) < 0:
                slopes[c] = (y_to - y_from) / (xb - xa)
        if not slopes:
            return None
        return slopes[cell] if cell in slopes else sum(slopes.values()) / len(slopes)

    def _moved(self, tasks: list[Task], ly: float, slope: float) -> float | None:
        """Log beta at log rate `ly` from the trial of `tasks` nearest it, along the secant of its
        cell (or of the cells that span both rates), else `slope`."""
        pool = [(f, t[0]) for t in tasks for f in self.facts.get(t, [])]
        if not pool:
            return None
        (x, y), cell = min(pool, key=lambda p: abs(p[0][1] - ly))
        if abs(ly - y) > 0.02:  # a long move: the secant over it, not a local slope
            slope = self.secant(cell, y, ly) or slope
        return x + (ly - y) / slope

    def half_width(self, source: str, slope: float) -> float:
        """Log-beta half-width of a bracket from `source`: 2x its largest measured error, at least
        :data:`MIN_HALF_WIDTH` tolerance bands; the prior before any measurement."""
        floor = MIN_HALF_WIDTH * self.tolerance / abs(slope)
        errors = self.errors.get(source)
        return max(floor, 2.0 * max(errors)) if errors else max(floor, PRIOR_HALF_WIDTH[source])

    def predict(self, task: Task) -> Prediction | None:
        """The first source's prediction for `task` (module docstring), recorded so that
        :meth:`matched` can measure its error; None when no other task has a converged trial."""
        cell, target, seed = task
        ly = math.log(target)
        slope = self.slope(cell, ly)
        others = [t for t in self.facts if t != task]
        groups = {
            "seed": [t for t in others if t[0] == cell and t[1] == target],
            "target": [t for t in others if t[0] == cell and t[1] != target],
        }
        centre, source = None, ""
        for name in ("seed", "target"):
            centre = self._moved(groups[name], ly, slope)
            if centre is not None:
                source = name
                break
        if centre is None:
            by_cell: dict[str, list[Task]] = {}
            for t in others:
                if t[1] == target:
                    by_cell.setdefault(t[0], []).append(t)
            estimates = [self._moved(ts, ly, self.slope(c, ly)) for c, ts in by_cell.items()]
            found = [e for e in estimates if e is not None]
            if found:
                centre, source = sum(found) / len(found), "lambda"
        if centre is None:
            centre = self._moved(others, ly, slope)
            source = "any"
        if centre is None:
            return None
        pred = Prediction(centre, self.half_width(source, slope), slope, source)
        self.predicted[task] = pred
        return pred


__all__ = ["DEFAULT_SLOPE", "MIN_HALF_WIDTH", "PRIOR_HALF_WIDTH", "SOURCES", "Prediction", "RatePredictor", "Task"]
