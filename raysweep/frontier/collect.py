"""MLflow -> pandas: the child runs of an experiment as one table, one row per trial.

The plots are drawn from MLflow, not from private files: params (dotted config keys), the latest
value of every metric (the value at the highest step, i.e. the final validation) and the tags of
each child run, found with ``search_runs``; variance profiles are read from the runs' artifacts.
Each run also gets its sweep's search mode and matched-rate tolerance, read from the
``sweep.yaml`` artifact of its parent run (when the sweep runner logged one).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raysweep.errors import RaysweepError
from raysweep.names import CLAIM_SPECS
from raysweep.storage import SWEEP_FILE
from raysweep.tracking.operating_points import OPERATING_POINT_TAG, TARGET_RATE_TAG
from raysweep.tracking.store import (
    DATASET_TAG,
    LOSS_TAG,
    MODEL_TAG,
    PARENT_TAG,
    ROLE_SWEEP,
    ROLE_TAG,
    ROLE_TRIAL,
    STATUS_TAG,
    TRIAL_ID_TAG,
    WITHHELD_TAG,
    find_experiment,
    make_client,
    search_all,
)

#: Convenience columns: name -> (source column, numeric?).
SHORT_COLUMNS: dict[str, tuple[str, bool]] = {
    "dataset": ("params.data.dataset", False),
    "model": ("params.model.arch", False),
    "loss": ("params.loss.neural", False),
    "pixel_loss": ("params.loss.pixel", False),
    "lambda_neural": ("params.loss.lambda_neural", True),
    "beta": ("params.objective.beta", True),
    "target_rate": ("params.objective.geco.target_rate", True),
    "seed": ("params.train.seed", True),
    "rate": ("metrics.rate", True),
    "mse": ("metrics.mse", True),
    "psnr": ("metrics.psnr", True),
    "distortion_sse": ("metrics.distortion_sse", True),
    "anisotropy": ("metrics.anisotropy", True),
    "aggregated_anisotropy": ("metrics.aggregated_anisotropy", True),
    "channel_anisotropy": ("metrics.channel_anisotropy", True),
    "active_units": ("metrics.active_units", True),
    "final_beta": ("metrics.beta", True),
    "step": ("metrics.step", True),
}


@dataclass
class Collected:
    """The runs of one experiment.

    Attributes:
        experiment: its name; experiment_id: its MLflow id; tracking_uri: where it lives.
        runs: one row per child run (see :func:`runs_frame`).
        parent_run_ids: the sweeps' parent runs (the report is logged to each).
    """

    experiment: str
    experiment_id: str
    tracking_uri: str
    runs: pd.DataFrame
    parent_run_ids: list[str] = field(default_factory=list)


def _row(run: Any) -> dict[str, Any]:
    tags = run.data.tags
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "mlflow_status": run.info.status,
        "start_time": run.info.start_time,
        "parent_run_id": tags.get(PARENT_TAG),
        "trial_id": tags.get(TRIAL_ID_TAG),
        "status": tags.get(STATUS_TAG, "unknown"),
        "tag_dataset": tags.get(DATASET_TAG),
        "tag_loss": tags.get(LOSS_TAG),
        "tag_model": tags.get(MODEL_TAG),
        "operating_point": tags.get(OPERATING_POINT_TAG) == "true",
        "op_target_rate": _to_number(tags.get(TARGET_RATE_TAG)),
        "withheld": _withheld(tags.get(WITHHELD_TAG)),
    }
    row.update({f"params.{k}": v for k, v in run.data.params.items()})
    row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
    return row


def _withheld(text: str | None) -> dict[str, str]:
    """The {metric: reason} of the run's withheld tag ({} when absent or unreadable)."""
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _to_number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def runs_frame(runs: list[Any]) -> pd.DataFrame:
    """One row per run: ``run_id``, ``run_name``, ``status`` (raysweep's tag), ``params.<key>``
    (strings, as MLflow stores them), ``metrics.<key>`` (final values), and the short columns of
    :data:`SHORT_COLUMNS` (``dataset``, ``lambda_neural``, ``rate`` in nats, ``mse`` per pixel...),
    plus ``geco`` (True when the run had a GECO rate target), ``operating_point`` and
    ``op_target_rate`` (nats; the tags of a matched-rate operating point), and ``withheld``
    ({metric: reason} of the metrics its last validation withheld as unsound)."""
    frame = pd.DataFrame([_row(r) for r in runs])
    for short, (source, numeric) in SHORT_COLUMNS.items():
        values = frame[source] if source in frame else pd.Series([None] * len(frame), index=frame.index)
        frame[short] = values.map(_to_number) if numeric else values
    for short, tag in (("dataset", "tag_dataset"), ("loss", "tag_loss"), ("model", "tag_model")):
        frame[short] = frame[short].where(frame[short].notna(), frame[tag]).fillna("unknown")
    frame["geco"] = frame["target_rate"].notna()
    return frame.sort_values(["dataset", "model", "loss", "lambda_neural", "beta", "start_time"]).reset_index(drop=True)


def collect_runs(tracking_uri: str, experiment: str) -> Collected:
    """Every child run (one per trial) of `experiment` in `tracking_uri`.

    Raises:
        RaysweepError: naming ``--experiment`` when the experiment does not exist or holds no
            trial runs.
    """
    client = make_client(tracking_uri)
    experiment_id = find_experiment(client, experiment)
    trials = search_all(client, [experiment_id], f"tags.`{ROLE_TAG}` = '{ROLE_TRIAL}'")
    if not trials:
        raise RaysweepError(
            f"--experiment {experiment!r} holds no trial runs in {tracking_uri}: run a sweep into it first"
        )
    parents = search_all(client, [experiment_id], f"tags.`{ROLE_TAG}` = '{ROLE_SWEEP}'")
    parent_ids = [p.info.run_id for p in parents]
    runs = with_sweep_settings(runs_frame(trials), sweep_settings(tracking_uri, parent_ids))
    return Collected(experiment, experiment_id, tracking_uri, runs, parent_ids)


#: What a run's sweep says of how to read it: ``sweep_mode``, ``tolerance``, the claims' margins and planned looks.
SWEEP_SETTING_COLUMNS = ("sweep_mode", "tolerance", *(f"claims_margin_{claim}" for claim in CLAIM_SPECS),
                         "claims_looks", "claims_alpha_look", "claims_alpha_spent", "claims_alpha_bound",
                         "claims_seeds_per_round")


def sweep_settings(tracking_uri: str, parent_run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per parent run that logged its ``sweep.yaml``: ``sweep_mode`` (``search.mode``),
    ``tolerance`` (``search.matched_rate.tolerance``, relative; None outside matched-rate sweeps),
    ``claims_margin_<claim>`` (``search.claims.margin``), and ``claims_looks``, ``claims_alpha_look``,
    ``claims_alpha_spent``, ``claims_alpha_bound`` (the ledger of ``--until-decided``; the bound is
    ``search.claims.alpha`` where none was written) and ``claims_seeds_per_round``."""
    client = make_client(tracking_uri)
    settings: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="raysweep_sweeps_") as tmp, no_progress_bars():
        for run_id in parent_run_ids:
            if SWEEP_FILE not in {f.path for f in client.list_artifacts(run_id)}:
                continue
            local = client.download_artifacts(run_id, SWEEP_FILE, str(Path(tmp) / run_id))
            try:
                search = (yaml.safe_load(Path(local).read_text()) or {}).get("search") or {}
            except yaml.YAMLError:
                continue
            matched = search.get("matched_rate") or {}
            claims = search.get("claims") or {}
            margins = claims.get("margin") or {}
            settings[run_id] = {"sweep_mode": search.get("mode"), "tolerance": _to_number(matched.get("tolerance")),
                                "claims_looks": _to_number(claims.get("looks")),
                                "claims_alpha_look": _to_number(claims.get("alpha_look")),
                                "claims_alpha_spent": _to_number(claims.get("alpha_spent")),
                                "claims_alpha_bound": _to_number(claims.get("alpha_bound") or claims.get("alpha")),
                                "claims_seeds_per_round": _to_number(claims.get("seeds_per_round"))}
            for claim in CLAIM_SPECS:
                settings[run_id][f"claims_margin_{claim}"] = _to_number(margins.get(claim))
    return settings


def with_sweep_settings(runs: pd.DataFrame, settings: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """`runs` with the columns of :data:`SWEEP_SETTING_COLUMNS` from each run's parent sweep."""
    runs = runs.copy()
    for column in SWEEP_SETTING_COLUMNS:
        runs[column] = runs["parent_run_id"].map(lambda p, c=column: settings.get(p, {}).get(c))
    for column in SWEEP_SETTING_COLUMNS[1:]:
        runs[column] = runs[column].map(_to_number)
    return runs


#: The metrics the claims read, fetched along training for :mod:`raysweep.frontier.along_training`.
HISTORY_METRICS = ("rate", "mse", "anisotropy")


def metric_histories(tracking_uri: str, run_ids: list[str], keys: tuple[str, ...] = HISTORY_METRICS) -> pd.DataFrame:
    """Every logged value of `keys` for each run (MLflow's metric history: one value per
    validation, at its training step): columns ``run_id``, ``key``, ``step``, ``value``."""
    client = make_client(tracking_uri)
    rows = [(run_id, key, int(m.step), float(m.value))
            for run_id in run_ids for key in keys for m in client.get_metric_history(run_id, key)]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def read_profile_csv(path: Path) -> np.ndarray:
    """The sorted mean posterior variances of a ``variance_profile.csv`` (rank, value rows)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return np.array([float(r["mean_posterior_variance"]) for r in rows], dtype=float)


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """MLflow draws a progress bar per downloaded file; dozens of one-file bars bury the report's
    output. The switch is an environment variable, set only while downloading (unless the user
    set it)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def load_variance_profiles(tracking_uri: str, run_ids: list[str]) -> dict[str, np.ndarray]:
    """``variance_profile.csv`` of each run that logged one, downloaded from its artifacts."""
    client = make_client(tracking_uri)
    profiles: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="raysweep_profiles_") as tmp, no_progress_bars():
        for run_id in run_ids:
            names = {f.path for f in client.list_artifacts(run_id)}
            if "variance_profile.csv" not in names:
                continue
            dst = Path(tmp) / run_id
            dst.mkdir()
            local = client.download_artifacts(run_id, "variance_profile.csv", str(dst))
            profiles[run_id] = read_profile_csv(Path(local))
    return profiles
