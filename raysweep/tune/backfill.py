"""Backfill a sweep's MLflow runs from its trials' files: the sweep layer's half of ``raysweep sync``.

:mod:`raysweep.tracking.sync` writes MLflow from a sweep directory but never reads the sweep
schema (tracking sits below the sweep layer); this module reads ``sweep.yaml`` and hands it what it
needs as a :class:`~raysweep.tracking.sync.SweepRecord`.
"""

from __future__ import annotations

import sys

from raysweep import storage
from raysweep.errors import RaysweepError
from raysweep.tracking.sync import SweepRecord, SyncReport, sync_sweep
from raysweep.tune.load import load_sweep_dir
from raysweep.tune.run_names import run_namer
from raysweep.tune.space import flat_trial_params


def sweep_record(sweep_dir: str) -> SweepRecord:
    """What :func:`~raysweep.tracking.sync.sync_sweep` needs of the sweep in `sweep_dir` (resolved)."""
    sweep = load_sweep_dir(sweep_dir)
    return SweepRecord(name=sweep.name, tracking_uri=sweep.tracking.uri,
                       experiment=sweep.tracking.experiment or sweep.name,
                       config=sweep.model_dump(mode="json"), flat_params=flat_trial_params,
                       run_name=run_namer(sweep, sweep_dir=sweep_dir))


def sync_sweep_dir(sweep_dir: str, tracking_uri: str | None = None) -> SyncReport:
    """``raysweep sync SWEEP_DIR``: write into MLflow whatever of the sweep it lacks.

    Args:
        sweep_dir: the sweep directory (``<storage>/<name>``, local or object storage).
        tracking_uri: the store to write (default: the sweep's ``tracking.uri``, else
            ``<storage>/mlflow.db``, as the sweep used).

    Raises:
        RaysweepError: not a sweep directory, or a store that does not answer.
    """
    sweep_dir = storage.resolve_sweep_dir(sweep_dir)
    return sync_sweep(sweep_dir, sweep_record(sweep_dir), tracking_uri=tracking_uri)


def backfill_tracking(sweep_dir: str) -> None:
    """After a resume, write into MLflow what the interrupted driver never sent.

    A validation reported just before the driver was killed is checkpointed but reaches neither
    MLflow nor Tune's ``result.json``, and the trial continuing from that checkpoint does not report
    it again; :func:`sync_sweep_dir` logs it from the trial's ``metrics.jsonl`` (and writes nothing
    when MLflow is complete). Tracking that does not answer now is one line, not a failed resume:
    ``raysweep sync`` does the same later.
    """
    try:
        report = sync_sweep_dir(sweep_dir)
    except RaysweepError as err:
        print(f"raysweep: tracking not backfilled after the resume ({err})", file=sys.stderr, flush=True)
        return
    if report.changed:
        print(report.line(), flush=True)
