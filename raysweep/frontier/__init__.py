"""raysweep.frontier: rate-distortion frontiers, anisotropy curves and the paper's claims, drawn from MLflow runs.

:mod:`~raysweep.frontier.collect` (MLflow -> DataFrame), :mod:`~raysweep.frontier.selection`
(groups, fixed-beta runs, runs at a matched rate), :mod:`~raysweep.frontier.claims` (slopes,
frontier shift, 95% intervals and verdicts; ``raysweep claims``), :mod:`~raysweep.frontier.pareto`,
:mod:`~raysweep.frontier.plots` and :mod:`~raysweep.frontier.report` (``raysweep report``).
"""
