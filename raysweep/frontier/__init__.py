"""raysweep.frontier: rate-distortion frontiers and anisotropy curves drawn from MLflow runs.

:mod:`~raysweep.frontier.collect` (MLflow -> DataFrame), :mod:`~raysweep.frontier.pareto`,
:mod:`~raysweep.frontier.plots` and :mod:`~raysweep.frontier.report` (``raysweep report``).
"""
