"""raysweep.train: one trial, without Ray or MLflow, top down.

- ``loop``: the training loop (DDP-aware) and its ``report(metrics, checkpoint)`` callable;
- ``launch``: local DDP without Ray (``raysweep train --workers N``);
- ``objective``: the balanced distortion plus beta times KL (the terms from :mod:`raysweep.registry`);
- ``evaluate``: the validation metrics as pure functions of a model and data;
- ``artifacts``: the variance profile and the reconstruction grid;
- ``checkpoint``: atomic checkpoints, the newest k kept;
- ``sampler`` and ``distributed``: seeded batch order and the DDP helpers.
"""
