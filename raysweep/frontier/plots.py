"""The frontier report's figures, per dataset x model x neural loss (matplotlib, Agg backend).

(a) rate-distortion frontier: per-pixel MSE against rate (nats), one curve per lambda across beta,
    the Pareto-optimal runs ringed and joined (paper figure 3);
(b) final rate against lambda at each fixed beta (paper figure 4);
(c) mean per-sample anisotropy against lambda at each matched rate target (GECO runs), error bars
    the spread (standard deviation) over seeds (paper figure 5);
(d) sorted posterior variance profiles of the runs at one rate target R* (GECO target or
    matched-rate operating point), one panel per target, named in its title (paper figure 1);
    runs off their target (beyond the rate tolerance) are drawn dashed and counted. Fixed-beta
    runs are never compared here: at different betas their rates differ.

Runs whose neural loss is ``none`` are pure pixel SSE, i.e. lambda = 0 of every neural loss: they
join each neural-loss group of their dataset and model as its lambda = 0 curve (the groups and
the matched-rate selection are :mod:`raysweep.frontier.selection`'s, shared with the claims).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from raysweep.frontier.pareto import pareto_front  # noqa: E402
from raysweep.frontier.selection import groups, matched_runs  # noqa: E402

__all__ = ["Figure", "draw_group", "groups", "slug"]

DPI = 110
FIGSIZE = (6.0, 4.2)
MSE_LABEL = "distortion: per-pixel MSE (images in [-1, 1])"
RATE_LABEL = "rate: KL (nats)"
LAMBDA_LABEL = "lambda (neural share of the distortion)"


@dataclass
class Figure:
    """One figure of a group: its kind (a-d), title, file name (None when there was nothing to
    draw) and, then, why."""

    kind: str
    title: str
    file: str | None
    note: str = ""


def slug(title: str) -> str:
    """A file-name-safe form of a group title."""
    return "".join(c if c.isalnum() else "_" for c in title).strip("_").lower()


def _colours(values: list[float]) -> dict[float, tuple]:
    cmap = plt.get_cmap("viridis")
    n = max(1, len(values) - 1)
    return {v: cmap(0.9 * i / n) for i, v in enumerate(values)}


def _finite(frame: pd.DataFrame, *cols: str) -> pd.DataFrame:
    ok = np.ones(len(frame), dtype=bool)
    for col in cols:
        ok &= np.isfinite(frame[col].to_numpy(dtype=float))
    return frame[ok]


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _log_if_wide(ax: Axes, values: np.ndarray) -> None:
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) > 1 and values.max() / values.min() > 20:
        ax.set_yscale("log")


def plot_rd_frontier(runs: pd.DataFrame, path: Path, title: str) -> str:
    """(a) per-pixel MSE against rate; returns '' when drawn, else why not."""
    points = _finite(runs, "rate", "mse")
    if points.empty:
        return "no run with a finite final rate and MSE"
    fig, ax = plt.subplots(figsize=FIGSIZE)
    colours = _colours(sorted(points["lambda_neural"].dropna().unique()))
    for lam, colour in colours.items():
        at = points[points["lambda_neural"] == lam]
        fixed = at[~at["geco"]].groupby("beta", as_index=False)[["rate", "mse"]].mean().sort_values("beta")
        if not fixed.empty:
            ax.plot(fixed["rate"], fixed["mse"], "-o", color=colour, label=f"lambda={lam:g}", markersize=5)
            for _, row in fixed.iterrows():
                ax.annotate(f"β={row['beta']:g}", (row["rate"], row["mse"]), fontsize=7, color=colour,
                            xytext=(3, 3), textcoords="offset points")
        geco = at[at["geco"]].sort_values("rate")
        if not geco.empty:
            ax.plot(geco["rate"], geco["mse"], "D", color=colour, markersize=5, label=f"lambda={lam:g}, GECO")
    front = pareto_front(points)
    ax.plot(front["rate"], front["mse"], "--", color="0.3", linewidth=1, zorder=1)
    ax.scatter(front["rate"], front["mse"], s=110, facecolors="none", edgecolors="crimson", linewidths=1.4,
               label="Pareto-optimal", zorder=3)
    _log_if_wide(ax, points["mse"].to_numpy(dtype=float))
    ax.set_xlabel(RATE_LABEL)
    ax.set_ylabel(MSE_LABEL)
    ax.set_title(f"(a) rate-distortion frontier\n{title}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    return ""


def _mean_std(frame: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    stats = frame.groupby(by)[value].agg(["mean", "std", "count"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    return stats


def plot_rate_vs_lambda(runs: pd.DataFrame, path: Path, title: str) -> str:
    """(b) final rate against lambda, one line per fixed beta (mean +- std over seeds)."""
    fixed = _finite(runs[~runs["geco"]], "rate", "lambda_neural", "beta")
    if fixed.empty:
        return "no fixed-beta runs in this group"
    stats = _mean_std(fixed, ["beta", "lambda_neural"], "rate")
    fig, ax = plt.subplots(figsize=FIGSIZE)
    cmap = plt.get_cmap("plasma")
    betas = sorted(stats["beta"].unique())
    for i, beta in enumerate(betas):
        line = stats[stats["beta"] == beta].sort_values("lambda_neural")
        ax.errorbar(line["lambda_neural"], line["mean"], yerr=line["std"], fmt="-o", capsize=3, markersize=5,
                    color=cmap(0.85 * i / max(1, len(betas) - 1)), label=f"β={beta:g}")
    ax.set_xlabel(LAMBDA_LABEL)
    ax.set_ylabel("final rate: KL (nats)")
    ax.set_title(f"(b) rate against lambda at fixed beta\n{title}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, title="KL weight", title_fontsize=7)
    _save(fig, path)
    return ""


def plot_anisotropy_vs_lambda(runs: pd.DataFrame, path: Path, title: str) -> str:
    """(c) mean anisotropy against lambda per GECO rate target (mean +- std over seeds)."""
    geco = _finite(runs[runs["geco"]], "anisotropy", "lambda_neural", "target_rate")
    if geco.empty:
        return "no GECO (matched-rate) runs in this group: run a sweep with objective.geco.target_rate"
    stats = _mean_std(geco, ["target_rate", "lambda_neural"], "anisotropy")
    achieved = geco.groupby("target_rate")["rate"].mean()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    cmap = plt.get_cmap("cividis")
    targets = sorted(stats["target_rate"].unique())
    for i, target in enumerate(targets):
        line = stats[stats["target_rate"] == target].sort_values("lambda_neural")
        seeds = int(line["count"].max())
        ax.errorbar(line["lambda_neural"], line["mean"], yerr=line["std"], fmt="-s", capsize=3, markersize=5,
                    color=cmap(0.85 * i / max(1, len(targets) - 1)),
                    label=f"R*={target:g} nats (achieved {achieved[target]:.3g}; {seeds} seed{'s' * (seeds > 1)})")
    ax.set_xlabel(LAMBDA_LABEL)
    ax.set_ylabel("mean anisotropy  Var_j(log σ²_j)")
    ax.set_title(f"(c) anisotropy against lambda at matched rate\n{title}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    return ""


def _matched_sets(runs: pd.DataFrame, tolerance: float | None = None) -> tuple[list[tuple[float, pd.DataFrame]], str]:
    """(R* in nats, its runs with ``on_target``) per rate target, or ([], why not). Only runs at the
    same target are compared; fixed-beta runs (different rates) never are."""
    matched = matched_runs(runs, tolerance)
    if matched.empty:
        return [], ("no runs at a common rate target in this group (GECO objective.geco.target_rate, or "
                    "search.mode matched_rate): fixed-beta runs sit at different rates and are not compared")
    return [(float(t), at) for t, at in matched.groupby("rate_target", sort=True)], ""


def profile_targets(runs: pd.DataFrame, profiles: dict[str, np.ndarray], tolerance: float | None = None) -> list[float]:
    """The rate targets (nats) panel (d) draws: those with a variance profile among their runs."""
    sets, _ = _matched_sets(runs[runs["run_id"].isin(profiles.keys())], tolerance)
    return [target for target, _ in sets[:4]]


def plot_variance_profiles(runs: pd.DataFrame, profiles: dict[str, np.ndarray], path: Path, title: str,
                           tolerance: float | None = None) -> str:
    """(d) sorted mean posterior variance per latent coordinate, one panel per rate target R*, one
    line per run coloured by lambda (dashed: off target)."""
    with_profile = runs[runs["run_id"].isin(profiles.keys())]
    sets, why = _matched_sets(with_profile, tolerance)
    if not sets:
        return why if not with_profile.empty else "no variance_profile.csv artifacts in this group"
    sets = sets[:4]
    fig, axes = plt.subplots(1, len(sets), figsize=(FIGSIZE[0] * (0.75 + 0.5 * len(sets)) / 1.25, FIGSIZE[1]),
                             squeeze=False, sharey=True)
    colours = _colours(sorted(runs["lambda_neural"].dropna().unique()))
    for ax, (target, members) in zip(axes[0], sets, strict=True):
        seen: set[tuple[float, bool]] = set()
        for _, row in members.sort_values("lambda_neural").iterrows():
            values = profiles[row["run_id"]]
            lam, on = row["lambda_neural"], bool(row["on_target"])
            label = f"lambda={lam:g} (rate {row['rate']:.3g}{'' if on else ', off target'})"
            ax.plot(np.arange(len(values)), values, "-o" if on else "--o", markersize=3, color=colours.get(lam, "k"),
                    label=label if (lam, on) not in seen else None, alpha=1.0 if on else 0.6)
            seen.add((lam, on))
        within = int(members["on_target"].sum())
        tol = float(members["tolerance_used"].max())
        ax.set_yscale("log")
        ax.set_xlabel("latent coordinate (sorted by variance)")
        ax.set_title(f"R* = {target:g} nats: {within} of {len(members)} runs within {tol:.0%}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("mean posterior variance σ²")
    fig.suptitle(f"(d) sorted variance profiles at the same rate target\n{title}", fontsize=10)
    _save(fig, path)
    return ""


def draw_group(runs: pd.DataFrame, profiles: dict[str, np.ndarray], folder: Path, title: str,
               tolerance: float | None = None) -> list[Figure]:
    """The four figures of one group, written as ``folder/<group>_<kind>.png``. `tolerance`: the
    relative rate tolerance of panel (d) (None: each sweep's, else 0.05)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = slug(title)
    targets = profile_targets(runs, profiles, tolerance) if not runs.empty else []
    at = ", ".join(f"R* = {t:g} nats" for t in targets)
    makers: list[tuple[str, str, Callable[[Path], str]]] = [
        ("a", "Rate-distortion frontier", lambda p: plot_rd_frontier(runs, p, title)),
        ("b", "Rate against lambda at fixed beta", lambda p: plot_rate_vs_lambda(runs, p, title)),
        ("c", "Anisotropy against lambda at matched rate", lambda p: plot_anisotropy_vs_lambda(runs, p, title)),
        ("d", f"Sorted variance profiles at the same rate target{f' ({at})' if at else ''}",
         lambda p: plot_variance_profiles(runs, profiles, p, title, tolerance)),
    ]
    figures = []
    for kind, caption, make in makers:
        name = f"{base}_{kind}.png"
        note = make(folder / name) if not runs.empty else "no finished runs in this group yet"
        figures.append(Figure(kind, caption, None if note else name, note))
    return figures


def plot_claims_along_training(trajectory: pd.DataFrame, path: Path, title: str) -> str:
    """(e) each claim row of one group against training step: the estimate and its interval at every
    validation, 0 and ±margin dashed, the validation nearest 75% of training marked (a verdict that
    changes after it is ``not settled``). Returns '' when drawn, else why not."""
    rows = list(dict.fromkeys(trajectory["row"])) if not trajectory.empty else []
    if not rows:
        return "no claim row of this group has an estimate at any validation"
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.4), squeeze=False, dpi=DPI)
    for ax, name in zip(axes[0], rows, strict=True):
        part = trajectory[trajectory["row"] == name].sort_values("step")
        steps = part["step"].to_numpy(dtype=float)
        ax.plot(steps, part["value"].to_numpy(dtype=float), "-o", color="C0", markersize=4, label="estimate")
        low, high = part["low"].to_numpy(dtype=float), part["high"].to_numpy(dtype=float)
        if np.isfinite(low).any():
            ax.fill_between(steps, low, high, color="C0", alpha=0.2, label="interval")
        margin = part["margin"].dropna()
        ax.axhline(0.0, color="k", linewidth=0.8)
        if not margin.empty:
            for sign in (-1, 1):
                ax.axhline(sign * float(margin.iloc[-1]), color="grey", linestyle="--", linewidth=0.8)
        ax.axvline(0.75 * steps.max(), color="C3", linestyle=":", linewidth=1.0, label="75% of training")
        for step, value, verdict in zip(steps, part["value"], part["verdict"], strict=True):
            ax.annotate(str(verdict), (step, value), fontsize=6, xytext=(2, 4), textcoords="offset points")
        ax.set_title(name.split(" | ", 2)[0].replace("_", " ") + ", " + name.rsplit(" | ", 1)[-1], fontsize=8)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"(e) claims along training\n{title}", fontsize=10)
    _save(fig, path)
    return ""
