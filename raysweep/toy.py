"""Closed-form linear-Gaussian toy model of posterior anisotropy (paper section 4.4, appendix D.2).

Why it exists: it shows, with no training at all, that a fixed rate does not fix how uncertainty
spreads across latent coordinates; the distortion's geometry does. It is also a cheap exact
stand-in for "train a VAE at this beta and read its rate", for testing matched-rate searchers.

The model: a linear decoder ``W`` (d x d), reconstructions compared under a quadratic metric ``M``,
a diagonal Gaussian posterior with a fixed mean and variances ``s_i``. With ``c_i = (W^T M W)_ii``
the variance-only objective is

    J(s) = sum_i c_i s_i  +  beta * 0.5 * sum_i (s_i - 1 - log s_i)

minimised by ``s_i* = beta / (beta + 2 c_i)``. The variance part of the rate (nats)

    V(beta) = 0.5 * sum_i (s_i* - 1 - log s_i*)

falls strictly from +inf to 0 as beta goes from 0 to +inf, so each target V has one beta, found by
bisection on log beta. Anisotropy ``A = Var_i(log s_i*)`` (population variance).

Defaults: ``dim = 16``, ``W = I``; the isotropic metric ``M = I`` (every ``c_i = 1``, so A = 0 at
every rate) and the ramped metric ``M = diag(exp(ramp * i / (dim - 1)))`` with ``ramp = ln 16``,
metric weights ramping geometrically from 1 to 16; target V = 17.25 nats, the matched variance-KL
of the paper's table 3. Why ln 16: the paper's exact d, W and ramp were lost in extraction, and
this choice (SPEC section 6) reproduces its table exactly: anisotropy 0 for the isotropic metric
and 0.6486 for the ramped one at V = 17.25 (checked independently by bisection). Any ramp > 0
gives the qualitative result, A > 0 at the same V.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import numpy as np

from raysweep.errors import RaysweepError

DEFAULT_DIM = 16
DEFAULT_RAMP = math.log(16.0)  # weights from 1 to 16: reproduces table 3 (A = 0.6486)
DEFAULT_TARGET_RATE = 17.25  # nats, the paper's table 3

MetricName = Literal["isotropic", "ramped"]
METRICS: tuple[MetricName, ...] = ("isotropic", "ramped")

# log beta is searched inside [-LOG_BETA_LIMIT, LOG_BETA_LIMIT]: far wider than any rate a float64
# can resolve, and exp() of it stays finite.
LOG_BETA_LIMIT = 700.0


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 2:
        raise RaysweepError(f"--dim must be an integer >= 2 (got {dim!r}); pass e.g. --dim {DEFAULT_DIM}")
    return int(dim)


def _check_ramp(ramp: float) -> float:
    if not isinstance(ramp, int | float | np.floating) or not math.isfinite(ramp):
        raise RaysweepError(f"--ramp must be a finite number (got {ramp!r}); pass e.g. --ramp {DEFAULT_RAMP}")
    return float(ramp)


def _check_target_rate(target_rate: float) -> float:
    if (not isinstance(target_rate, int | float | np.floating) or not math.isfinite(target_rate)
            or target_rate <= 0):
        raise RaysweepError(
            f"--target-rate must be a finite number of nats > 0 (got {target_rate!r}); "
            f"pass e.g. --target-rate {DEFAULT_TARGET_RATE}"
        )
    return float(target_rate)


def _check_weights(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    if c.size == 0 or not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError("effective weights c must be finite and >= 0 (M positive semi-definite)")
    return c


def effective_weights(W: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Effective per-coordinate weights ``c_i = (W^T M W)_ii`` (dimensionless), shape (d,).

    ``W`` is the decoder (output dim x d), ``M`` the symmetric metric (output dim x output dim).
    The expected distortion of a posterior with variances s is ``sum_i c_i s_i``, because only the
    diagonal of ``W^T M W`` survives the expectation over independent latent noise.
    """
    W = np.asarray(W, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    if W.ndim != 2 or M.ndim != 2 or M.shape != (W.shape[0], W.shape[0]):
        raise ValueError(f"need W (n, d) and M (n, n); got W {W.shape} and M {M.shape}")
    return np.einsum("ki,kl,li->i", W, M, W)


def optimal_variances(c: np.ndarray, beta: float) -> np.ndarray:
    """Minimiser of J(s): ``s_i* = beta / (beta + 2 c_i)``, posterior variances in (0, 1]."""
    c = _check_weights(c)
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return beta / (beta + 2.0 * c)


def _variance_rate_log_beta(c: np.ndarray, log_beta: float) -> float:
    """V as a function of log beta, stable at extreme beta.

    With x_i = 2 c_i / beta, s_i* = 1 / (1 + x_i) and s - 1 - log s = log(1 + x) - x / (1 + x);
    with t = log x that is softplus(t) - sigmoid(t), finite for every t (c_i = 0 gives t = -inf, 0).
    """
    with np.errstate(divide="ignore"):
        t = np.log(2.0 * c) - log_beta
    softplus = np.logaddexp(0.0, t)
    sigmoid = np.exp(-np.logaddexp(0.0, -t))
    return float(0.5 * np.sum(softplus - sigmoid))


def variance_rate(c: np.ndarray, beta: float) -> float:
    """Variance part of the rate at the optimum, nats: ``V = 0.5 * sum_i (s_i* - 1 - log s_i*)``.

    Strictly decreasing in beta when some ``c_i > 0``: +inf as beta -> 0, 0 as beta -> inf.
    """
    c = _check_weights(c)
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    return _variance_rate_log_beta(c, math.log(beta))


def distortion(c: np.ndarray, s: np.ndarray) -> float:
    """Expected quadratic distortion from the posterior variances: ``sum_i c_i s_i``."""
    return float(np.sum(np.asarray(c, dtype=np.float64) * np.asarray(s, dtype=np.float64)))


def anisotropy(s: np.ndarray) -> float:
    """Posterior anisotropy ``A = Var_i(log s_i)``, population variance (paper eq. 47 / eq. 7)."""
    return float(np.var(np.log(np.asarray(s, dtype=np.float64))))


def beta_for_rate(c: np.ndarray, target_rate: float, rel_tol: float = 1e-12) -> float:
    """The unique beta with ``variance_rate(c, beta) == target_rate`` (nats).

    Bisection on log beta: the bracket starts at [0, 0] and widens by 1 in log beta at a time until
    it encloses the target, then halves until it is narrower than ``rel_tol`` (so beta is known to
    that relative precision). Raises RaysweepError naming ``--target-rate`` when the target is not
    positive or lies beyond what float64 resolves, ValueError when every ``c_i`` is 0.
    """
    c = _check_weights(c)
    target_rate = _check_target_rate(target_rate)
    if not np.any(c > 0):
        raise ValueError("every c_i is 0: the rate is 0 at every beta, no target can be matched")

    def excess(log_beta: float) -> float:
        return _variance_rate_log_beta(c, log_beta) - target_rate

    lo, hi = 0.0, 0.0  # excess(lo) >= 0 >= excess(hi) once bracketed (V falls as beta grows)
    while excess(lo) < 0:
        lo -= 1.0
        if lo < -LOG_BETA_LIMIT:
            raise RaysweepError(
                f"--target-rate {target_rate} nats is beyond the toy model's range; pass a smaller one"
            )
    while excess(hi) > 0:
        hi += 1.0
        if hi > LOG_BETA_LIMIT:
            raise RaysweepError(
                f"--target-rate {target_rate} nats is too small to resolve; pass a larger one"
            )
    while hi - lo > rel_tol:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):  # float64 resolution of log beta reached
            break
        if excess(mid) > 0:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def isotropic_metric(dim: int = DEFAULT_DIM) -> np.ndarray:
    """The isotropic metric ``M = I`` (pixel squared error in the toy), shape (dim, dim)."""
    return np.eye(_check_dim(dim))


def ramped_metric(dim: int = DEFAULT_DIM, ramp: float = DEFAULT_RAMP) -> np.ndarray:
    """The anisotropic metric ``M = diag(exp(ramp * i / (dim - 1)))``, i = 0..dim-1.

    Weights ramp exponentially from 1 to ``exp(ramp)``, like a perceptual loss that cares more
    about some directions; ``ramp = 0`` reduces to the isotropic metric.
    """
    dim = _check_dim(dim)
    ramp = _check_ramp(ramp)
    return np.diag(np.exp(ramp * np.arange(dim) / (dim - 1)))


def metric_weights(metric: str, dim: int = DEFAULT_DIM, ramp: float = DEFAULT_RAMP) -> np.ndarray:
    """Effective weights c for a named metric with the default decoder ``W = I``."""
    if metric == "isotropic":
        M = isotropic_metric(dim)
    elif metric == "ramped":
        M = ramped_metric(dim, ramp)
    else:
        raise RaysweepError(f"--metric must be one of {', '.join(METRICS)} (got {metric!r})")
    return effective_weights(np.eye(M.shape[0]), M)


def toy_rate(beta: float, dim: int = DEFAULT_DIM, ramp: float = DEFAULT_RAMP,
             metric: MetricName = "ramped") -> float:
    """Converged variance-KL (nats) of the toy model trained at ``beta``: ``V(beta)``.

    A cheap, exact stand-in for "train a VAE at this beta and measure its rate", for testing
    matched-rate searchers (GECO targets, bisection or Bayesian search over beta): the answer is
    strictly decreasing in beta, and the beta that matches a rate is known from ``beta_for_rate``.
    """
    if not (isinstance(beta, int | float | np.floating) and math.isfinite(beta) and beta > 0):
        raise RaysweepError(f"beta must be a finite number > 0 (got {beta!r})")
    return variance_rate(metric_weights(metric, dim, ramp), float(beta))


def matched_rate_table(dim: int = DEFAULT_DIM, ramp: float = DEFAULT_RAMP,
                       target_rate: float = DEFAULT_TARGET_RATE) -> list[dict]:
    """The paper's table 3: both metrics brought to the same variance-KL, and their anisotropy.

    One row per metric, keys ``metric`` ("isotropic" | "ramped"), ``target_rate`` and
    ``achieved_rate`` (nats), ``beta``, ``anisotropy`` (Var_i log s_i*) and ``distortion``
    (``sum_i c_i s_i*``, the expected quadratic distortion at the optimum).
    """
    dim, ramp, target_rate = _check_dim(dim), _check_ramp(ramp), _check_target_rate(target_rate)
    rows: list[dict] = []
    for metric in METRICS:
        c = metric_weights(metric, dim, ramp)
        beta = beta_for_rate(c, target_rate)
        s = optimal_variances(c, beta)
        rows.append({
            "metric": metric,
            "target_rate": target_rate,
            "achieved_rate": variance_rate(c, beta),
            "beta": beta,
            "anisotropy": anisotropy(s),
            "distortion": distortion(c, s),
        })
    return rows


def table_markdown(rows: list[dict], dim: int, ramp: float) -> str:
    lines = [
        f"Toy model (paper table 3): dim = {dim}, W = I, "
        f"ramped metric M = diag(exp({ramp:g} i / (dim - 1))).",
        "",
        "| metric | distortion | target V (nats) | achieved V (nats) | beta | anisotropy |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['metric']} | {r['distortion']:.4f} | {r['target_rate']:.4f} | {r['achieved_rate']:.4f} "
            f"| {r['beta']:.6g} | {r['anisotropy']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _plot_figure7(path: Path, dim: int, ramp: float, target_rate: float, rows: list[dict]) -> None:
    # The object-oriented API with an explicit Agg canvas: no pyplot global state, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(projection="polar")
    theta = 2.0 * np.pi * np.arange(dim) / dim
    closed = np.append(theta, theta[0])
    for row, style in zip(rows, ("o-", "s--"), strict=True):
        std = np.sqrt(optimal_variances(metric_weights(row["metric"], dim, ramp), row["beta"]))
        ax.plot(closed, np.append(std, std[0]), style, markersize=4,
                label=f"{row['metric']} (A = {row['anisotropy']:.3f})")
    ax.set_ylim(0.0, None)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xticks(theta)
    ax.set_xticklabels([str(i) for i in range(dim)], fontsize=7)
    ax.set_title(f"Posterior std per latent dimension at matched V = {target_rate:g} nats", fontsize=10)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_toy(dim: int = DEFAULT_DIM, ramp: float = DEFAULT_RAMP, target_rate: float = DEFAULT_TARGET_RATE,
            out_dir: Path | None = None) -> list[dict]:
    """Compute ``matched_rate_table`` and, when ``out_dir`` is given, write its artifacts there.

    Files: ``table.json`` (the rows, as ``raysweep toy --json`` prints them), ``table.md`` (a
    markdown table like the paper's table 3) and ``figure7.png`` (polar plot of the posterior
    standard deviation sqrt(s_i*) per dimension at the matched rate: a circle for the isotropic
    metric, a lopsided shape for the ramped one). Returns the rows.
    """
    rows = matched_rate_table(dim, ramp, target_rate)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
        (out_dir / "table.md").write_text(table_markdown(rows, int(dim), float(ramp)))
        _plot_figure7(out_dir / "figure7.png", int(dim), float(ramp), float(target_rate), rows)
    return rows
