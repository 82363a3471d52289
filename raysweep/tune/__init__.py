"""Sweeps on Ray Tune, top down (a sweep file flows through them in this order).

- ``sweep_config``: the typed sweep file (`trial`, `search` with its `matched_rate` and `claims`
  blocks, `resources`, `tracking`, `failure`, `checkpoint`); the schema only, no Ray;
- ``keys``: dotted and nested spellings of a sweep's keys (one key, one spelling);
- ``load``: read a sweep file, apply ``--set`` overrides, validate the whole sweep; ``sweep.yaml``;
- ``space``: cells (cells x grid x seeds), validation of every expanded trial (once per sweep: the
  expansion is kept on the sweep), Tune's param space;
- ``resources``: the resource plan per trial and the maximum concurrency on a cluster;
- ``modes``: the search modes behind one interface (``search_mode(sweep)``: its searcher and Tune
  config, param space, the keys its searcher sets, what it announces and ``validate`` says, what a
  finished run adds), each registered with ``SEARCH_MODES`` (:mod:`raysweep.registry`);
- ``check``: ``raysweep validate`` (describe a sweep and its plan without starting Ray);
- ``prepare``: ``raysweep prepare`` (build the data caches a sweep needs before it runs);
- ``search``: FIFO / ASHA schedulers and the cell searchers (grid, random, Optuna per cell);
- ``matched_rate/``: ``search.mode: matched_rate`` (points, warm, bisection, searchers, one per
  strategy registered with ``MATCHED_RATE_STRATEGIES``, plan);
- ``run_names``: the readable MLflow run name of each trial;
- ``trainable``: the Tune trial (the loop in-process, or a Ray Train TorchTrainer for DDP);
- ``placement``: reaping the placement groups of stopped DDP trials;
- ``console``: what the driver prints while Tune runs;
- ``graceful``: SIGTERM during a fit stops the trials at their next checkpoint and saves Tune's state;
- ``run``: ``raysweep sweep`` / ``raysweep resume``;
- ``growth`` and ``extend``: ``raysweep extend`` (new seeds, cells or grid values into a finished
  sweep), and the ledger of ``--until-decided``'s looks;
- ``backfill``: ``raysweep sync`` and the backfill after a resume (reads the sweep for tracking);
- ``summary``: the end-of-sweep outcome and its table;
- ``ray_shim``: the private Ray APIs used, each behind one function.

Path and URI rules are :mod:`raysweep.storage` (ground floor). This ``__init__`` imports nothing,
so ``raysweep.tune.sweep_config`` loads without Ray.
"""
