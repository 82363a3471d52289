"""Tune function trainables the matched-rate tests drive the searchers with (test-only code).

Both take the sweep runner's convention: a flat config of dotted keys plus the searcher's
``META_KEY``. Ray's workers import this module by name: start Ray with :func:`worker_pythonpath`
in its ``runtime_env``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from raysweep.tune.matched_rate.points import BETA_KEY, get_dotted, matched_rate_report, split_trial_config

HERE = Path(__file__).resolve().parent
TOY_RAMP = 4.0  # the toy trainable's default ramp (not raysweep.toy's default, ln 16)


def worker_pythonpath() -> str:
    """``PYTHONPATH`` for Ray workers: the repository and this folder."""
    return os.pathsep.join([str(HERE.parents[2]), str(HERE)])


def toy_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable on the closed-form toy model (``raysweep.toy``), for testing searchers.

    Reads ``objective.beta`` and the matched-rate metadata; ``toy.*`` may set ``dim``, ``ramp``,
    ``metric``, ``epochs`` (reports, default 8), ``rise`` (0.5), ``seconds_per_epoch``. Reports at
    epoch t of n the rate ``V(beta) * (1 - rise * (1 - t/n)^2)`` (nats): it climbs to the exact
    converged ``V(beta)`` at t = n, like the tiny VAE's rate, so ``stopped_trials="rate_rises"``
    holds; plus the toy distortion, anisotropy, beta, ``rate_error`` and ``progress``.
    """
    from ray import tune

    from raysweep.toy import anisotropy, distortion, metric_weights, optimal_variances, variance_rate

    trial, meta = split_trial_config(config)

    def toy(key: str, default: Any) -> Any:
        return get_dotted(trial, f"toy.{key}", default)

    beta = float(get_dotted(trial, BETA_KEY))
    c = metric_weights(toy("metric", "ramped"), int(toy("dim", 16)), float(toy("ramp", TOY_RAMP)))
    final_rate, s = variance_rate(c, beta), optimal_variances(c, beta)
    epochs, rise = int(toy("epochs", 8)), float(toy("rise", 0.5))
    report = matched_rate_report(lambda m, _ckpt: tune.report(m), meta["target"] if meta else final_rate,
                                 total_steps=epochs)
    for t in range(1, epochs + 1):
        time.sleep(float(toy("seconds_per_epoch", 0.0)))
        report({"rate": final_rate * (1.0 - rise * (1.0 - t / epochs) ** 2), "epoch": float(t), "step": t,
                "beta": beta, "distortion_sse": distortion(c, s), "anisotropy": anisotropy(s)}, None)


def train_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable for one-worker matched-rate trials of the real VAE: the three things
    the sweep runner's trainable does (drop ``META_KEY`` before validating, wrap ``report`` with
    ``matched_rate_report``, let the loop report), without its checkpoints and storage rules."""
    import torch
    from ray import tune

    from raysweep.train.loop import train
    from raysweep.tune.space import trial_config_from_params

    torch.set_num_threads(1)  # one intra-op thread per trial: trials share the CPU cores
    trial, meta = split_trial_config(config)
    cfg = trial_config_from_params(trial)
    target = meta["target"] if meta else float("nan")
    report = matched_rate_report(lambda metrics, _ckpt: tune.report(metrics), target, cfg=cfg)
    train(cfg, tune.get_context().get_trial_dir(), report=report, progress=False)
