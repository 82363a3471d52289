"""The closed-form toy model (SPEC section 6) against direct numerical minimisation and its own
guarantees: V(beta) monotone, one beta per target, anisotropy 0 only for the isotropic metric."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from raysweep.errors import RaysweepError
from raysweep.toy import (
    DEFAULT_DIM,
    DEFAULT_RAMP,
    anisotropy,
    beta_for_rate,
    distortion,
    effective_weights,
    isotropic_metric,
    matched_rate_table,
    metric_weights,
    optimal_variances,
    ramped_metric,
    run_toy,
    toy_rate,
    variance_rate,
)


def _minimise_objective(c: np.ndarray, beta: float) -> np.ndarray:
    """argmin_s J(s) by L-BFGS on log s in float64, knowing nothing of the closed form."""
    c_t = torch.tensor(c, dtype=torch.float64)
    log_s = torch.zeros(len(c), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_s], lr=1.0, max_iter=500, tolerance_grad=1e-14,
                            tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        s = log_s.exp()
        objective = (c_t * s).sum() + beta * 0.5 * (s - 1 - log_s).sum()
        objective.backward()
        return objective

    for _ in range(5):
        opt.step(closure)
    return log_s.exp().detach().numpy()


def test_effective_weights_give_the_expected_distortion() -> None:
    rng = np.random.default_rng(0)
    W = rng.normal(size=(7, 5))
    A = rng.normal(size=(7, 7))
    M = A @ A.T  # symmetric positive definite
    s = rng.uniform(0.1, 1.0, size=5)
    c = effective_weights(W, M)
    # E[(W d)^T M (W d)] with d ~ N(0, diag s) is tr(W^T M W diag s).
    assert distortion(c, s) == pytest.approx(np.trace(W.T @ M @ W @ np.diag(s)), rel=1e-12)
    np.testing.assert_allclose(effective_weights(np.eye(4), np.eye(4)), np.ones(4))


@pytest.mark.parametrize("beta", [0.05, 0.7, 3.0, 40.0])
def test_closed_form_matches_numerical_minimisation(beta: float) -> None:
    rng = np.random.default_rng(1)
    W = rng.normal(size=(6, 6))
    M = ramped_metric(6, 3.0)
    c = effective_weights(W, M)
    np.testing.assert_allclose(optimal_variances(c, beta), _minimise_objective(c, beta), rtol=1e-6, atol=1e-9)


def test_optimal_variances_formula() -> None:
    c = np.array([0.0, 1.0, 2.5])
    np.testing.assert_allclose(optimal_variances(c, 2.0), [1.0, 0.5, 2.0 / 7.0])


def test_variance_rate_strictly_decreasing_with_limits() -> None:
    c = metric_weights("ramped", DEFAULT_DIM, DEFAULT_RAMP)
    betas = np.logspace(-8, 8, 161)
    rates = np.array([variance_rate(c, b) for b in betas])
    assert np.all(np.diff(rates) < 0)
    assert rates[0] > 100.0  # -> +inf as beta -> 0
    assert rates[-1] < 1e-10  # -> 0 as beta -> inf
    # Agrees with the direct formula where that formula is accurate.
    s = optimal_variances(c, 0.3)
    assert variance_rate(c, 0.3) == pytest.approx(0.5 * np.sum(s - 1 - np.log(s)), rel=1e-12)


@pytest.mark.parametrize("target", [1.0, 17.25, 100.0])
@pytest.mark.parametrize("metric", ["isotropic", "ramped"])
def test_beta_for_rate_hits_the_target(target: float, metric: str) -> None:
    c = metric_weights(metric)
    beta = beta_for_rate(c, target)
    assert variance_rate(c, beta) == pytest.approx(target, rel=1e-9)
    assert toy_rate(beta, metric=metric) == pytest.approx(target, rel=1e-9)


@pytest.mark.parametrize("target", [1.0, 17.25, 100.0])
def test_matched_rate_table(target: float) -> None:
    rows = matched_rate_table(DEFAULT_DIM, DEFAULT_RAMP, target)
    assert [r["metric"] for r in rows] == ["isotropic", "ramped"]
    for r in rows:
        assert set(r) == {"metric", "target_rate", "achieved_rate", "beta", "anisotropy", "distortion"}
        assert abs(r["achieved_rate"] - target) / target < 1e-3
        assert r["beta"] > 0 and r["distortion"] > 0
    iso, ramped = rows
    assert abs(iso["anisotropy"]) < 1e-9
    assert ramped["anisotropy"] > 0.01
    # Isotropic closed form: V = d/2 (s - 1 - log s) with s = beta / (beta + 2).
    s = iso["beta"] / (iso["beta"] + 2.0)
    assert DEFAULT_DIM * 0.5 * (s - 1 - math.log(s)) == pytest.approx(target, rel=1e-9)


def test_default_table_reproduces_paper_table_3() -> None:
    """The defaults (d = 16, W = I, weights ramping 1 -> 16, V = 17.25 nats) give table 3's numbers."""
    assert DEFAULT_RAMP == pytest.approx(math.log(16.0))
    iso, ramped = matched_rate_table()
    assert round(iso["anisotropy"], 4) == 0.0
    assert round(ramped["anisotropy"], 4) == 0.6486
    assert ramped["achieved_rate"] == pytest.approx(17.25, rel=1e-6)


def test_anisotropy_positive_for_any_nonzero_ramp() -> None:
    for ramp in (-2.0, 0.3, 8.0):
        assert matched_rate_table(8, ramp, 5.0)[1]["anisotropy"] > 0
    assert matched_rate_table(8, 0.0, 5.0)[1]["anisotropy"] < 1e-9


def test_metrics_shapes() -> None:
    np.testing.assert_array_equal(isotropic_metric(3), np.eye(3))
    np.testing.assert_allclose(np.diag(ramped_metric(3, 2.0)), [1.0, math.e, math.e**2])
    assert anisotropy(np.array([math.exp(-1), 1.0, math.e])) == pytest.approx(2.0 / 3.0)


def test_run_toy_writes_artifacts(tmp_path: Path) -> None:
    rows = run_toy(6, 3.0, 4.0, tmp_path / "toy")
    out = tmp_path / "toy"
    assert json.loads((out / "table.json").read_text()) == rows
    md = (out / "table.md").read_text()
    assert "| isotropic |" in md and "| ramped |" in md and "anisotropy" in md
    png = (out / "figure7.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(out / "figure7.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert run_toy(6, 3.0, 4.0, None) == rows


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"dim": 1}, "--dim"),
        ({"dim": 2.5}, "--dim"),
        ({"target_rate": 0.0}, "--target-rate"),
        ({"target_rate": -3.0}, "--target-rate"),
        ({"target_rate": float("nan")}, "--target-rate"),
        ({"ramp": float("inf")}, "--ramp"),
        ({"ramp": float("nan")}, "--ramp"),
    ],
)
def test_bad_inputs_name_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(RaysweepError, match=flag):
        run_toy(**kwargs)


def test_toy_rate_rejects_bad_beta_and_metric() -> None:
    with pytest.raises(RaysweepError, match="beta"):
        toy_rate(0.0)
    with pytest.raises(RaysweepError, match="--metric"):
        toy_rate(1.0, metric="fancy")  # type: ignore[arg-type]
