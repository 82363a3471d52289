"""``raysweep extend SWEEP --until-decided``: add seeds in rounds until every claim is decided.

A sweep's first seeds often leave a claim ``undecided``: the interval crosses 0 but is not inside
the margin either. This runs rounds of new seeds through the ordinary ``raysweep extend`` path
(:func:`raysweep.tune.extend.extend_sweep`: only the new trials run, into the same directory and
MLflow parent run), and after each round recomputes the claims from MLflow and prints which rows
are still open. It stops when none is (every row falls / rises / is negligible, or shifts down /
up; rows no seed can decide, such as a shift withheld for want of betas, do not hold it up), or
when the sweep has ``max_seeds`` seeds.

**Error rates across looks.** Looking after every round and stopping at the first decision would
inflate the false-verdict rate if each look tested at 5%. The looks are planned up front,
L = 1 + ceil((max_seeds - seeds now) / seeds_per_round), and each tests at (what is left of the
sweep's budget) / L (:func:`raysweep.frontier.statistics.alpha_per_look`, Bonferroni spending: by
the union bound the false-verdict rate over all looks is at most the sum of their levels, whatever
the correlation between looks). A single-look read of the claims made before the sequence (the
sweep's own table) is its own analysis at its own 5%; the sequence's first look re-reads the same
seeds at its stricter level.

**A ledger, so a promise holds across sequences.** Every look taken adds its level to
``search.claims.alpha_spent`` in the sweep (its ``sweep.yaml`` and the parent run's artifact), with
``alpha_look`` (what a later ``raysweep claims`` tests at) and ``alpha_bound`` (``search.claims.alpha``,
0.05 by default). A second ``--until-decided`` on the same sweep plans its looks over what is left
(a first sequence that decided early leaves the levels of the looks it did not take); when nothing
is left it is refused in one line, unless ``--extra-alpha A`` carries it on: its looks then spend A,
and every row and the methods note say the combined bound (0.05 + A).
``benchmarks/claims_coverage.py`` (its sequential part) simulates the whole procedure on synthetic truth.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raysweep import storage
from raysweep.errors import RaysweepError
from raysweep.frontier.claims import DECIDED, ClaimRow, open_rows
from raysweep.frontier.claims_table import where
from raysweep.frontier.report import sweep_claims
from raysweep.frontier.statistics import planned_looks
from raysweep.names import CLAIM_SPECS
from raysweep.registry import SEARCH_MODES
from raysweep.tracking.store import tracking_uri_for
from raysweep.tune.load import load_sweep_dir
from raysweep.tune.sweep_config import SweepConfig


@dataclass
class Look:
    """One look at the claims: the seeds it saw and the rows still open after it."""

    seeds: list[int]
    rows: list[ClaimRow]
    open: list[ClaimRow]


@dataclass
class UntilDecided:
    """What ``--until-decided`` did: every look, the planned looks, and why it stopped."""

    looks_planned: int
    alpha_look: float = 0.05
    alpha_bound: float = 0.05
    looks: list[Look] = field(default_factory=list)
    decided: bool = False
    stopped_by_budget: bool = False

    @property
    def rows(self) -> list[ClaimRow]:
        return self.looks[-1].rows if self.looks else []


def sweep_seeds(sweep: SweepConfig) -> list[int]:
    """The seeds a grid sweep runs: ``search.seeds``, else its one ``train.seed`` (default 0)."""
    if sweep.search.seeds is not None:
        return list(sweep.search.seeds)
    trial_train = (sweep.trial or {}).get("train") or {}
    return [int(trial_train.get("seed", 0))]


def next_seeds(seeds: Sequence[int], count: int) -> list[int]:
    """`count` new seeds after the largest of `seeds` (never one already run)."""
    start = max(seeds) + 1 if seeds else 0
    return list(range(start, start + count))


def look_summary(rows: Sequence[ClaimRow], still_open: Sequence[ClaimRow]) -> str:
    """``2 of 6 claim rows decided, 3 open, 1 that more seeds cannot decide (...)``: a row withheld,
    or short of lambdas or betas, is neither decided nor waited for."""
    decided = sum(r.verdict in DECIDED for r in rows)
    text = f"{decided} of {len(rows)} claim rows decided, {len(still_open)} open"
    stuck = len(rows) - decided - len(still_open)
    if stuck:
        text += f", {stuck} that more seeds cannot decide (see its reason in raysweep claims)"
    return text


def _line(row: ClaimRow) -> str:
    need = f", ~{row.seeds_needed} seeds projected" if row.seeds_needed else ""
    return f"  {CLAIM_SPECS[row.claim].label} {row.group} {where(row)}: {row.verdict}{need}"


def extend_until_decided(
    sweep_dir: str,
    max_seeds: int | None = None,
    seeds_per_round: int | None = None,
    margins: Mapping[str, float] | None = None,
    overrides: Sequence[str] = (),
    address: str | None = None,
    callbacks: list[Any] | None = None,
    verbose: int = 1,
    extra_alpha: float | None = None,
) -> UntilDecided:
    """Add seeds to the finished grid sweep in `sweep_dir` until its claims are decided (module docstring).

    Args:
        sweep_dir: the sweep directory (``STORAGE/NAME``).
        max_seeds: the most seeds the sweep may reach (default ``search.claims.max_seeds``, else
            twice its seeds, at least 6).
        seeds_per_round: seeds added per round (default ``search.claims.seeds_per_round``).
        margins: equivalence margins per claim (default the sweep's ``search.claims.margin``);
            written into the sweep with the first round.
        overrides: must be empty (this grows ``search.seeds`` itself).
        address, callbacks, verbose: as :func:`raysweep.tune.extend.extend_sweep`.
        extra_alpha: a further false-verdict rate to spend when earlier sequences spent the
            sweep's budget (the combined bound is then said on every row).

    Raises:
        RaysweepError: a budget below the seeds already run, ``--set`` given, a spent
            false-verdict budget without ``--extra-alpha``, or anything ``raysweep extend`` refuses.
    """
    from raysweep.tune.extend import extend_sweep, record_claims_ledger

    if overrides:
        raise RaysweepError("--until-decided grows search.seeds itself: grow anything else with a plain "
                            "`raysweep extend --set ...` first, then add --until-decided")
    sweep_dir = storage.resolve_sweep_dir(sweep_dir)
    sweep = load_sweep_dir(sweep_dir)
    growable = [spec.name for spec in SEARCH_MODES if spec.extendable and spec.fixed_beta]
    if sweep.search.mode not in growable:
        raise RaysweepError(f"search.mode {sweep.search.mode}: --until-decided adds seeds to {' and '.join(growable)} "
                            "sweeps only")
    seeds = sweep_seeds(sweep)
    config = sweep.search.claims
    per_round = seeds_per_round or config.seeds_per_round
    budget = max_seeds or config.max_seeds or max(2 * len(seeds), 6)
    if per_round < 1:
        raise RaysweepError(f"--seeds-per-round {per_round}: add at least 1 seed per round")
    if budget < len(seeds):
        raise RaysweepError(f"--max-seeds {budget}: the sweep already has {len(seeds)} seeds; give at least that many")
    bound = config.alpha_bound or config.alpha
    # a sweep written before the ledger that ran a sequence (looks > 1) spent its whole budget
    spent = config.alpha_spent if config.alpha_spent > 0 or config.looks <= 1 else bound
    if extra_alpha is not None and not 0 < extra_alpha < 1:
        raise RaysweepError(f"--extra-alpha {extra_alpha:g}: give a false-verdict rate between 0 and 1, e.g. 0.05")
    if bound - spent <= 1e-12:
        if extra_alpha is None:
            raise RaysweepError(
                f"{sweep_dir}: earlier looks of --until-decided spent the sweep's false-verdict budget "
                f"(search.claims.alpha_spent {spent:.3g} of {bound:.3g}); a further sequence would break that "
                "bound: read the claims as they stand, or add --extra-alpha 0.05 to carry on and have every row "
                f"say the combined bound ({bound + 0.05:.3g})")
        bound += extra_alpha
    elif extra_alpha is not None:
        raise RaysweepError(f"--extra-alpha: the sweep still has {bound - spent:.3g} of its false-verdict budget "
                            "to spend; run without --extra-alpha")
    planned = planned_looks(len(seeds), budget, per_round)
    per_look = (bound - spent) / planned
    earlier = config.looks if config.looks > 1 or config.alpha_spent > 0 else 0
    looks = earlier + planned
    margin_overrides = [f"search.claims.margin.{claim}={value:g}" for claim, value in (margins or {}).items()]
    root, _ = storage.split_sweep_dir(sweep_dir)
    uri = tracking_uri_for(root, sweep.tracking.uri)
    experiment = sweep.tracking.experiment or sweep.name
    result = UntilDecided(looks_planned=looks, alpha_look=per_look, alpha_bound=bound)
    left = f" (earlier looks spent {spent:.3g})" if spent > 0 else ""
    print(f"raysweep: until decided: {len(seeds)} seeds now, at most {budget}, {per_round} per round; "
          f"{planned} look{'s' * (planned != 1)} planned, each at alpha {per_look:.3g}; false verdicts over every look of this sweep "
          f"at most {bound:.3g}{left}", flush=True)
    while True:
        effective = {**_sweep_margins(sweep), **(margins or {})}
        rows = sweep_claims(experiment, uri, margins=effective, alpha_look=per_look, alpha_bound=bound,
                            looks=earlier + len(result.looks) + 1)
        spent += per_look
        ledger = {"looks": earlier + len(result.looks) + 1, "alpha_look": per_look, "alpha_spent": min(spent, bound),
                  "alpha_bound": bound}
        record_claims_ledger(sweep_dir, ledger)
        still_open = open_rows(rows)
        result.looks.append(Look(list(seeds), rows, still_open))
        print(f"raysweep: look {len(result.looks)} of {planned} at {len(seeds)} seed{'s' * (len(seeds) != 1)}: "
              f"{look_summary(rows, still_open)}", flush=True)
        for row in still_open:
            print(_line(row), flush=True)
        if not still_open:
            result.decided = True
            break
        if len(seeds) >= budget:
            result.stopped_by_budget = True
            print(f"raysweep: until decided: the budget of {budget} seeds is spent with {len(still_open)} rows open",
                  file=sys.stderr, flush=True)
            break
        added = next_seeds(seeds, min(per_round, budget - len(seeds)))
        grown = [*seeds, *added]
        extend_sweep(sweep_dir, [f"search.seeds=[{','.join(str(s) for s in grown)}]", *margin_overrides],
                     address=address, callbacks=callbacks, verbose=verbose)
        margin_overrides = []
        seeds = grown
        sweep = load_sweep_dir(sweep_dir)
    return result


def _sweep_margins(sweep: SweepConfig) -> dict[str, float]:
    return {k: float(v) for k, v in sweep.search.claims.margin.model_dump().items() if v is not None}
