"""Sweeps on Ray Tune.

- ``sweep_config``: the typed sweep file (`trial`, `search`, `resources`, `tracking`, `failure`,
  `checkpoint`) and ``--set`` overrides;
- ``space``: cells (cells x grid x seeds), validation of every expanded trial, Tune's param space;
- ``resources``: the resource plan per trial and the maximum concurrency on a cluster;
- ``search``: FIFO / ASHA schedulers and the sweep's searcher (grid, random, Optuna per cell);
- ``trainable``: the Tune trial (the loop in-process, or a Ray Train TorchTrainer for DDP);
- ``run``: ``raysweep sweep`` / ``raysweep resume`` and the Tune callback hook for trackers;
- ``validate``: ``raysweep validate``.
"""
