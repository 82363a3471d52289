"""Bisection on log beta for the matched-rate search: :class:`BetaBracket`, the pure rules for one
(cell, target) (no Ray: :class:`raysweep.tune.matched_rate.searchers.BisectionSearcher` runs one per
task under Tune; ``search.matched_rate.strategy: bisection``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from raysweep.tune.matched_rate.points import within_tolerance
from raysweep.tune.sweep_config import StoppedTrials

LOG_BETA_LIMIT = 40.0  # beyond e^+-40 no VAE objective is meaningful: the task is out of reach
WARM_PROBES = 3  # warm probes (one at a time) before a bracket that is still one-sided falls back
# A Newton step may leave the warm bracket by this many half-widths before the prediction counts as
# missed: seed-to-seed noise (~10% in rate on the tiny VAE) moves a centre trial just outside it.
WARM_REACH = 2.0


@dataclass
class BetaBracket:
    """Bisection state on log beta for one (cell, target); pure logic, no Ray.

    Facts: ``observed`` (log beta, converged rate nats); ``too_small`` / ``too_large``: log betas
    that early-stopped trials proved below / above the answer. ``lo`` is the largest log beta known
    to give a rate above the target, ``hi`` the smallest known to give one below. Proposals:

    1. no facts yet: ``probes`` points splitting [log_floor, log_ceil] evenly (k-section);
    2. otherwise the secant root x* of log rate vs log beta through the bracket ends (one end
       unknown: extrapolated from the two observations nearest the target), kept 5% inside a known
       end, with the Illinois rule (while one end keeps moving, the other end's offset from the
       target is halved each time) against regula falsi's stall. Rates are floored at 1% of the
       target, since a collapsed posterior's ~0 nats says little about the slope;
    3. further probes in flight hedge around x* at +1.5, -1.5, +3, -3 times the log-beta half-width
       of the tolerance band (``tolerance / |slope|``), larger beta first because log rate is
       concave in log beta (the secant root tends to fall short); without x* (or when noise made
       the facts non-monotone, lo > hi) they bisect the widest gap between the ends and the probes
       in flight;
    4. an unknown side stops the first probe at log_floor / log_ceil; once a probe there still
       misses, that limit moves out by the initial width, doubling each time (to +-40, then the
       task is ``exhausted``).

    A warm start (:meth:`warm_start`, from :class:`raysweep.tune.matched_rate.warm.Prediction`)
    goes first: the bracket ``centre +- half_width`` (log beta) with the neighbours' ``slope``.
    It probes one trial at a time: the centre, then Newton steps ``x + (log R* - log R) / slope``
    from the trial nearest the target (the slope from two of the task's own trials once it has
    them). Once its trials bracket the target (``warm_outcome = "bracketed"``), rule 2 takes over
    with those ends. The prediction *misses* (``warm_outcome = "missed"``) when a Newton step lands
    more than :data:`WARM_REACH` half-widths from the centre, when the centre trial proved nothing (failed or stopped) or after
    :data:`WARM_PROBES` one-sided probes: then the search falls back to the rules above, from
    [log_floor, log_ceil] as a cold start, keeping every fact it has.

    ``status``: ``searching``, ``matched`` (a converged trial within ``tolerance``) or ``exhausted``
    (``max_trials`` used, bracket narrower than 1e-4 in log beta, or target out of reach).
    """

    target: float
    tolerance: float
    log_floor: float
    log_ceil: float
    probes: int = 2
    max_trials: int = 12
    observed: list[tuple[float, float]] = field(default_factory=list)
    too_small: list[float] = field(default_factory=list)
    too_large: list[float] = field(default_factory=list)
    pending: list[float] = field(default_factory=list)
    moves: list[str] = field(default_factory=list)
    started: int = 0
    expansions: int = 0
    status: Literal["searching", "matched", "exhausted"] = "searching"
    warm: tuple[float, float, float] | None = None  # (centre, half-width, slope) while warm
    warm_probes: int = 0
    warm_outcome: Literal["", "warm", "bracketed", "missed"] = ""

    def __post_init__(self) -> None:
        self.width0 = self.log_ceil - self.log_floor

    def warm_start(self, centre: float, half_width: float, slope: float) -> None:
        """Start from a predicted log beta ``centre`` +- ``half_width`` (log beta) with local slope
        ``slope`` (d log R / d log beta, < 0); only before the first probe."""
        if self.started == 0 and math.isfinite(centre) and half_width > 0 and slope < 0:
            self.warm, self.warm_outcome = (centre, half_width, slope), "warm"

    def _warm_point(self) -> float | None:
        """The next warm probe, or None once the warm start has bracketed the target or missed."""
        assert self.warm is not None
        centre, half_width, slope = self.warm
        lo, hi = self.bounds()
        if lo is not None and hi is not None:
            self.warm, self.warm_outcome = None, "bracketed"
            return None
        if not self.observed:
            if self.warm_probes == 0 and not self.too_small and not self.too_large:
                self.warm_probes += 1
                return centre
            self.warm, self.warm_outcome = None, "missed"
            return None
        ly_target = math.log(self.target)
        own = self._secant(lo[0] if lo else self.log_floor, None, hi[0] if hi else self.log_ceil, None)
        x, r = min(self.observed, key=lambda p: abs(self._ly(p[1]) - ly_target))
        step = own if own is not None else (x + (ly_target - self._ly(r)) / slope, slope)
        x_next = step[0]
        if abs(x_next - centre) > WARM_REACH * half_width or self.warm_probes >= WARM_PROBES:
            self.warm, self.warm_outcome = None, "missed"
            return None
        spacing = self.tolerance / abs(step[1])
        if lo is not None:  # keep strictly past the known end, by at least one tolerance band
            x_next = max(x_next, lo[0] + spacing)
        if hi is not None:
            x_next = min(x_next, hi[0] - spacing)
        self.warm_probes += 1
        return x_next

    def _ly(self, rate: float) -> float:
        # a collapsed posterior's rate (~0 nats) is noise: floor it at 1% of the target
        return math.log(max(rate, 0.01 * self.target))

    def bounds(self) -> tuple[tuple[float, float | None] | None, tuple[float, float | None] | None]:
        """(lo, hi) as (log beta, log rate or None for a bound from a stopped trial)."""
        lows = [(x, self._ly(r)) for x, r in self.observed if r > self.target] + [(x, None) for x in self.too_small]
        highs = [(x, self._ly(r)) for x, r in self.observed if r < self.target] + [(x, None) for x in self.too_large]
        lo = max(lows, key=lambda p: (p[0], p[1] is not None)) if lows else None
        hi = min(highs, key=lambda p: (p[0], p[1] is None)) if highs else None
        return lo, hi

    def propose(self) -> float | None:
        """Next log beta to probe, or None (probes all in flight, or the task is over)."""
        if self.status != "searching" or len(self.pending) >= (1 if self.warm else self.probes):
            return None
        if self.started >= self.max_trials:
            if not self.pending:
                self.status = "exhausted"
            return None
        x = self._next_point()
        if x is None:
            if not self.pending:
                self.status = "exhausted"
            return None
        self.pending.append(x)
        self.started += 1
        return x

    def _next_point(self) -> float | None:
        if self.warm is not None:
            x = self._warm_point()
            if x is not None:
                return x
        if not self.observed and not self.too_small and not self.too_large and self.started < self.probes:
            return self.log_floor + self.width0 * (self.started + 1) / (self.probes + 1)
        lo, hi = self.bounds()
        noisy = lo is not None and hi is not None and lo[0] >= hi[0]
        if noisy:  # noise made the facts non-monotone: bisect the ambiguous span
            lo, hi = (hi[0], None), (lo[0], None)
        while lo is not None and hi is None and lo[0] >= self.log_ceil - 1e-9:
            self.log_ceil = lo[0] + self.width0 * 2 ** self.expansions
            self.expansions += 1
        while hi is not None and lo is None and hi[0] <= self.log_floor + 1e-9:
            self.log_floor = hi[0] - self.width0 * 2 ** self.expansions
            self.expansions += 1
        if max(abs(self.log_floor), abs(self.log_ceil)) > LOG_BETA_LIMIT:
            return None
        a, ya, soft_a = (lo[0], lo[1], False) if lo else (self.log_floor, None, True)
        b, yb, soft_b = (hi[0], hi[1], False) if hi else (self.log_ceil, None, True)
        if b - a < 1e-4:
            return None
        if lo is not None and hi is not None and not noisy:
            # Illinois rule: while one end keeps moving, halve the other end's offset from the target
            # each time, so the secant stops hugging the moving end (regula falsi's stall)
            run = next((i for i, m in enumerate(reversed(self.moves)) if m != self.moves[-1]), len(self.moves))
            ly_target, damp = math.log(self.target), 0.5 ** max(0, run - 1)
            if self.moves and self.moves[-1] == "lo" and yb is not None:
                yb = ly_target + (yb - ly_target) * damp
            elif self.moves and self.moves[-1] == "hi" and ya is not None:
                ya = ly_target + (ya - ly_target) * damp
        estimate = None if noisy else self._secant(a, ya, b, yb)
        in_flight = [p for p in self.pending if a <= p <= b]
        candidates, spacing = [], 1e-6
        if estimate is not None:
            x_star, slope = estimate
            # log-beta half-width of the tolerance band around the root, from the local slope
            spacing = self.tolerance / abs(slope)
            # log rate is concave in log beta for the toy and for VAEs (the rate collapses at large
            # beta), so the secant root tends to fall short: hedge towards larger beta first
            candidates = [x_star + o * spacing for o in (0.0, 1.5, -1.5, 3.0, -3.0)]
        elif not in_flight:
            candidates = [0.5 * (a + b)]
        margin = 0.05 * (b - a)
        low, high = (a if soft_a else a + margin), (b if soft_b else b - margin)
        seen = self.pending + [x for x, _ in self.observed]
        for i, x in enumerate(candidates):
            # an unknown side's limit binds the first probe only: a hedge may look past it
            reach = self.width0 if i else 0.0
            x = min(max(x, low - (reach if soft_a else 0.0)), high + (reach if soft_b else 0.0))
            if all(abs(x - p) > 0.5 * spacing for p in seen):
                return x
        edges = sorted({a, b, *in_flight})
        i = max(range(len(edges) - 1), key=lambda j: edges[j + 1] - edges[j])
        return 0.5 * (edges[i] + edges[i + 1])

    def _secant(self, a: float, ya: float | None, b: float, yb: float | None) -> tuple[float, float] | None:
        """Root of the line log rate vs log beta through the bracket ends (or, with one end unknown,
        the two observations nearest the target), and that line's slope (< 0); None if no such line."""
        ly_target = math.log(self.target)
        if ya is not None and yb is not None and yb < ya:
            slope = (yb - ya) / (b - a)
            return a + (ly_target - ya) / slope, slope
        pts = sorted(((x, self._ly(r)) for x, r in self.observed), key=lambda p: abs(p[1] - ly_target))
        for (x1, y1), (x2, y2) in zip(pts, pts[1:], strict=False):
            if abs(x2 - x1) > 1e-9:
                slope = (y2 - y1) / (x2 - x1)
                return (x1 + (ly_target - y1) / slope, slope) if slope < 0 else None
        return None

    def observe(self, log_beta: float, rate: float | None, converged: bool,
                stopped_trials: StoppedTrials = "ignore") -> None:
        """Take a finished trial's result: ``rate`` nats (None on error), converged or stopped early."""
        if log_beta in self.pending:
            self.pending.remove(log_beta)
        if rate is not None and math.isfinite(rate):
            if converged:
                before = self.bounds()
                self.observed.append((log_beta, rate))
                if within_tolerance(rate, self.target, self.tolerance):
                    self.status = "matched"
                after = self.bounds()
                if after[0] != before[0] or after[1] != before[1]:  # which end of the bracket moved
                    self.moves.append("lo" if after[0] != before[0] else "hi")
            elif stopped_trials == "rate_rises" and rate > self.target:
                self.too_small.append(log_beta)  # converged rate >= last rate > target
            elif stopped_trials == "rate_falls" and rate < self.target:
                self.too_large.append(log_beta)  # converged rate <= last rate < target
        if self.status == "searching" and self.started >= self.max_trials and not self.pending:
            self.status = "exhausted"


__all__ = ["LOG_BETA_LIMIT", "BetaBracket", "StoppedTrials"]
