"""Small, real Ray Tune sweeps of raysweep's training loop, tracked by the MLflow callback.

Used by the tracking tests and the frontier report test. The trainable is a plain Tune function
trainable calling raysweep's real ``train()`` on a tiny config, reporting every validation with its
checkpoint (``tune.report(metrics, checkpoint=...)``) and resuming from Tune's checkpoint when a
trial is retried: the shape the sweep runner gives one-worker trials.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tiny_trial import tiny_trial_tree

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

#: What the tracked sweeps change in the tiny trial (:mod:`tiny_trial`): the box-blur term (at lambda
#: 0 unless a sweep sets it) and 30 steps, so every tracked trial has three validations.
TRACKED_TRIAL = {"loss.neural": "box_blur", "train.max_steps": 30}


def tiny_trial_dict(**dotted: Any) -> dict[str, Any]:
    """The tracked tiny trial with dotted-key overrides, e.g. ``tiny_trial_dict(**{"train.max_steps": 40})``."""
    return tiny_trial_tree(**{**TRACKED_TRIAL, **dotted})


def trainable(config: dict[str, Any]) -> None:
    """Tune function trainable: ``config["trial"]`` is the base trial tree; other keys that
    contain a dot override it (the grid axes); ``_fail_at_step`` + ``_fail_marker`` make the first
    attempt report that step's metrics without its checkpoint and then crash (a worker that died
    between reporting and persisting), so Tune retries the trial from its previous checkpoint."""
    import torch
    from ray import tune

    from raysweep.config import set_dotted, trial_config_from_dict
    from raysweep.train.loop import train

    torch.set_num_threads(1)
    tree = copy.deepcopy(config["trial"])
    for key, value in config.items():
        if "." in key and not key.startswith("_"):
            set_dotted(tree, key, value)
    cfg = trial_config_from_dict(tree)
    out_dir = Path(tune.get_context().get_trial_dir())
    fail_at = config.get("_fail_at_step")
    marker = Path(config["_fail_marker"]) if config.get("_fail_marker") else None

    def report(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        if fail_at is not None and marker is not None and metrics["step"] == fail_at and not marker.exists():
            marker.write_text("failed once\n")
            tune.report(metrics)
            raise RuntimeError(f"injected failure at step {fail_at}")
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        train(cfg, out_dir, report=report, progress=False)
        return
    with checkpoint.as_directory() as restored:  # a retried or restored trial continues
        train(cfg, out_dir, report=report, resume_from=restored, progress=False)


def init_ray(num_cpus: int) -> None:
    """A private local Ray instance (never an already running cluster) whose workers can import
    raysweep, this module and :mod:`tiny_trial` (which it imports)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    path = os.pathsep.join([str(REPO), str(HERE), str(HERE.parent)])
    ray.init(
        address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}},
    )


def run_sweep(
    storage: Path,
    name: str,
    param_space: dict[str, Any],
    callback: Any,
    max_failures: int = 0,
    max_concurrent: int = 2,
    scheduler: Any = None,
) -> Any:
    """Run a Tuner over `param_space` with `callback`; returns its ResultGrid."""
    from ray import tune

    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, scheduler=scheduler),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), callbacks=[callback], verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    return tuner.fit()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_health(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``<url>/health`` until the MLflow server answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"no answer from {url}/health within {timeout:.0f} s")


def stop_process_group(proc: subprocess.Popen) -> None:
    """Terminate a process started with ``start_new_session=True`` and everything it spawned."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (free port, SQLite backend, proxied artifacts in
    `folder`); yields its URL and terminates it at the end."""
    port = free_port()
    log = open(folder / "mlflow_server.log", "w")  # noqa: SIM115 - closed below
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--artifacts-destination", str(folder / "server_artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, proc=proc)
        yield url
    finally:
        stop_process_group(proc)
        log.close()


@contextmanager
def ui_server(storage: Path, log_path: Path) -> Iterator[str]:
    """``raysweep ui --storage STORAGE`` as a real subprocess on a free port, its output in
    `log_path`; yields its base URL once ``/health`` answers and stops its process group after."""
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raysweep.cli", "ui", "--storage", str(storage), "--port", str(port)],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_health(base, proc=proc)
            yield base
        finally:
            stop_process_group(proc)
