"""Claims along training: every claim row recomputed at each validation step from MLflow's metric
history (no new runs), and ``not settled: train longer`` where the verdict at the last validation
differs from the one at the validation nearest 75% of training. Synthetic stores written the way
raysweep's tracking callback writes them (metrics at their training steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from synthetic_store import log_sweep

from raysweep.cli import main
from raysweep.frontier import claims as C
from raysweep.frontier.along_training import runs_at_step
from raysweep.frontier.claims_table import NOT_SETTLED
from raysweep.frontier.collect import collect_runs, metric_histories
from raysweep.frontier.report import build_report, sweep_claims
from raysweep.tracking.store import tracking_uri_for

STEPS = (100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)
LAMBDAS = (0.0, 0.5, 1.0)


def _runs(rng: np.random.Generator, slope_at) -> list[dict]:
    """4 seeds x 3 lambdas at beta 0.1 whose rate slope against lambda at step t is `slope_at(t)`
    (each seed its own offset, a little noise), validated every 100 steps to step 1000."""
    offsets = rng.normal(0.0, 2.0, 4)
    runs = []
    for lam in LAMBDAS:
        for seed in range(4):
            path = [(t, 20.0 + slope_at(t) * lam + offsets[seed] + rng.normal(0.0, 0.2)) for t in STEPS]
            runs.append({"loss": "none" if lam == 0 else "box_blur", "lambda_neural": lam, "beta": 0.1, "seed": seed,
                         "rate": path[-1][1], "mse": 0.01, "anisotropy": 1.0, "final_step": STEPS[-1],
                         "history": {"rate": path[:-1], "mse": [(t, 0.01) for t in STEPS[:-1]],
                                     "anisotropy": [(t, 1.0) for t in STEPS[:-1]]}})
    return runs


def test_a_slope_that_changes_sign_late_in_training_is_not_settled(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(12)
    uri = tracking_uri_for(tmp_path, None)
    # falls by 4 nats per unit lambda until step 800, rises by 4 from step 900: the verdict at the last
    # validation (rises) differs from the one at the validation nearest 75% of training (700 and 800 are
    # equally near 750: the earlier, 700, where it falls)
    log_sweep(uri, "late", "late", _runs(rng, lambda t: -4.0 if t <= 800 else 4.0))
    log_sweep(uri, "early", "early", _runs(rng, lambda t: -4.0 if t <= 300 else 4.0))
    [late] = [r for r in sweep_claims("late", uri) if r.claim == C.RATE_VS_LAMBDA]
    assert late.verdict == C.RISES and late.settled is False
    assert late.check_step == 700 and late.last_step == 1000 and late.verdict_at_check == C.FALLS
    [early] = [r for r in sweep_claims("early", uri) if r.claim == C.RATE_VS_LAMBDA]
    assert early.verdict == C.RISES and early.settled is True and early.verdict_at_check == C.RISES

    # the text table, the JSON and the parent run's description say it
    assert main(["claims", "--experiment", "late", "--tracking-uri", uri]) == 0
    text = capsys.readouterr().out
    assert f"{NOT_SETTLED} (falls at step 700 of 1000)" in text
    assert main(["claims", "--experiment", "late", "--tracking-uri", uri, "--json"]) == 0
    import json

    record = next(r for r in json.loads(capsys.readouterr().out) if r["claim"] == C.RATE_VS_LAMBDA)
    assert record["settled"] is False and record["settling"].startswith(NOT_SETTLED)
    from raysweep.tracking.store import make_client

    client = make_client(uri)
    parent = client.search_runs([client.get_experiment_by_name("late").experiment_id],
                                "tags.`raysweep.role` = 'sweep'")[0]
    assert NOT_SETTLED in parent.data.tags["mlflow.note.content"]

    # the report draws each row against training step
    index = build_report("late", uri, tmp_path / "report", log_to_mlflow=False)
    page = index.read_text()
    assert "Claims along training" in page and NOT_SETTLED in page
    assert (tmp_path / "report" / "plots" / "xysquares___vector_vae___box_blur_e.png").stat().st_size > 5000


def test_each_run_is_read_at_its_last_validation_at_or_before_the_step(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    uri = tracking_uri_for(tmp_path, None)
    log_sweep(uri, "s", "s", _runs(rng, lambda t: -t / 100.0))
    runs = collect_runs(uri, "s").runs
    histories = metric_histories(uri, runs["run_id"].tolist())
    assert set(histories["step"]) == set(STEPS) and set(histories["key"]) == {"rate", "mse", "anisotropy"}
    at = runs_at_step(runs, histories, 450)  # between validations: the one at 400
    first = at.iloc[0]
    own = histories[(histories["run_id"] == first["run_id"]) & (histories["key"] == "rate")].set_index("step")
    assert first["rate"] == own.loc[400, "value"] and first["step"] == 400
    assert pd.isna(runs_at_step(runs, histories, 50)["rate"]).all()  # before any validation: nothing to read
