"""raysweep.tracking: sweeps in MLflow.

- :mod:`raysweep.tracking.store`: where a sweep's MLflow data lives (``tracking_uri_for``), the
  experiment get-or-create, and the tag look-ups of parent and child runs;
- :mod:`raysweep.tracking.mlflow`: the Tune callback (``mlflow_callback``) that writes one parent
  run per sweep and one child run per trial;
- :mod:`raysweep.tracking.writer` and :mod:`raysweep.tracking.journal`: the callback's writer thread
  (outage vs refusal, a bounded queue) and the sweep's journal of what did not reach MLflow;
- :mod:`raysweep.tracking.results`: what a trial's config, results and files mean for MLflow;
- :mod:`raysweep.tracking.ui`: ``raysweep ui``.
"""
