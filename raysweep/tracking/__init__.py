"""raysweep.tracking: sweeps in MLflow, top down.

- :mod:`raysweep.tracking.mlflow`: the Tune callback (``mlflow_callback``) that writes one parent
  run per sweep and one child run per trial, through its writer thread;
- :mod:`raysweep.tracking.sync`: ``raysweep sync``, a sweep directory replayed into MLflow (only
  what is missing);
- :mod:`raysweep.tracking.runs`: the one MLflow run writer both of them use (parent and child runs,
  params, metric batches, tags, ends);
- :mod:`raysweep.tracking.writer` and :mod:`raysweep.tracking.journal`: the callback's writer thread
  (outage vs refusal, a bounded queue) and the sweep's journal of what did not reach MLflow;
- :mod:`raysweep.tracking.trial_view`: what the callback and sync know of a trial;
- :mod:`raysweep.tracking.results`: what a trial's config, results and files mean for MLflow;
- :mod:`raysweep.tracking.operating_points`: the matched-rate operating points as MLflow tags and artifacts;
- :mod:`raysweep.tracking.ui`: ``raysweep ui``;
- :mod:`raysweep.tracking.trained`: a run's trained model loaded back (``raysweep.load_run``,
  ``raysweep export``), found from its tags, its trial folder and its newest intact checkpoint;
- :mod:`raysweep.tracking.store`: where a sweep's MLflow data lives (``tracking_uri_for``), the
  store rules (no SQLite on a network filesystem), tag names, the experiment get-or-create and the
  look-ups of parent and child runs.
"""
