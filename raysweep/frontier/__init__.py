"""raysweep.frontier: rate-distortion frontiers, anisotropy curves and the paper's claims, drawn from MLflow runs.

:mod:`~raysweep.frontier.collect` (MLflow -> DataFrame, metric histories),
:mod:`~raysweep.frontier.selection` (groups, conditions, fixed-beta runs, runs at a matched rate),
:mod:`~raysweep.frontier.statistics` (two-stage slopes over seeds, paired shifts, verdicts, looks),
:mod:`~raysweep.frontier.claims` (claim rows and verdicts; ``raysweep claims``),
:mod:`~raysweep.frontier.claims_table` (JSON, CSV, text, markdown),
:mod:`~raysweep.frontier.along_training` (each claim at every validation; settled or not),
:mod:`~raysweep.frontier.sequential` (``raysweep extend --until-decided`` and its ledger),
:mod:`~raysweep.frontier.operating_points`, :mod:`~raysweep.frontier.pareto`,
:mod:`~raysweep.frontier.plots`, :mod:`~raysweep.frontier.reconstructions` (the report's panel of
reconstructions by lambda and beta), :mod:`~raysweep.frontier.live_report` (the report a running sweep
rewrites) and :mod:`~raysweep.frontier.report` (``raysweep report``).
"""
