"""Matched-rate search: per (cell, target), find the KL weight beta whose converged rate is R*.

The paper compares latent geometry *at the same rate*, so for each cell of a sweep (a combination
of the swept keys other than beta, e.g. ``loss.lambda_neural=0.5``) and each target rate R* (nats)
the user wants the beta that puts the trained model at R*. Three strategies
(``search.matched_rate.strategy``; with ``search.seeds`` each seed is its own task, and with
``warm`` (the default) each task starts from what the others learned; the block :class:`raysweep.tune.sweep_config.MatchedRateSearch`):

- ``bisection``: the converged rate falls monotonically with log beta, so each (cell, target) keeps
  a bracket on log beta and probes it, several trials at a time (:mod:`.bisection` has the rules).
  It stops when a trial lands within ``tolerance``.
- ``optuna``: one Optuna TPE study per (cell, target) over log beta minimising
  ``rate_error = |log(R / R*)|``, with ASHA stopping trials whose rate is off early.
- ``geco``: one run per (cell, target) with ``objective.geco.target_rate``.

The modules, top down:

- :mod:`.points`: the trial conventions (``META_KEY``, ``rate_error``, ``progress``) and the
  operating-points table (model, CSV / JSON files); no Ray;
- :mod:`.warm`: :class:`~.warm.RatePredictor`, a task's predicted log beta from its neighbours'
  converged trials (other seeds, other targets, other cells, in that order); no Ray;
- :mod:`.bisection`: :class:`~.bisection.BetaBracket`, bisection on log beta for one task, from a
  warm start when there is one; no Ray;
- :mod:`.searchers`: the three Tune ``Searcher`` s over every (cell, target) of a sweep at once,
  and the stopper of superseded trials;
- :mod:`.plan`: the pieces the sweep runner takes (param space, ``TuneConfig``, stopper) and, after
  the run, the operating points on disk and in MLflow.

The contract with the sweep runner: the param space is the sweep's flat trial config (dotted keys);
a suggestion sets the cell's keys and ``objective.beta`` (GECO: ``objective.geco.target_rate``) and
carries ``points.META_KEY`` (cell, target, strategy), which the trainable removes before it
validates the trial config, wrapping its report with ``points.matched_rate_report`` so results
carry ``rate_error`` and ``progress``; ``num_samples=-1``: a searcher returns ``FINISHED`` when
every (cell, target) is matched or out of trials.

This package's ``__init__`` imports nothing, so reading the table (:mod:`.points`) never imports Ray.
"""
