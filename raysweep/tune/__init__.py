"""Sweeps on Ray Tune, top down (a sweep file flows through them in this order).

- ``sweep_config``: the typed sweep file (`trial`, `search` with its `matched_rate` block,
  `resources`, `tracking`, `failure`, `checkpoint`); the schema only, no Ray;
- ``load``: read a sweep file, apply ``--set`` overrides, validate the whole sweep; ``sweep.yaml``;
- ``space``: cells (cells x grid x seeds), validation of every expanded trial, Tune's param space;
- ``resources``: the resource plan per trial and the maximum concurrency on a cluster;
- ``check``: ``raysweep validate`` (describe a sweep and its plan without starting Ray);
- ``storage``: every path and URI rule of sweeps and trials, text I/O, the Optuna URL;
- ``search``: FIFO / ASHA schedulers and the sweep's searcher (grid, random, Optuna per cell);
- ``matched_rate/``: ``search.mode: matched_rate`` (points, bisection, searchers, plan);
- ``trainable``: the Tune trial (the loop in-process, or a Ray Train TorchTrainer for DDP);
- ``console``: what the driver prints while Tune runs;
- ``run``: ``raysweep sweep`` / ``raysweep resume``;
- ``summary``: the end-of-sweep outcome and its table;
- ``ray_shim``: the private Ray APIs used, each behind one function.

This ``__init__`` imports nothing, so ``raysweep.tune.sweep_config`` (and ``storage``, which
:mod:`raysweep.tracking` imports) load without Ray.
"""
