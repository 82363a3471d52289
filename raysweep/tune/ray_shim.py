"""The private Ray APIs raysweep needs, each behind one function here and nowhere else.

Written against Ray :data:`RAY_VERSION` and pinned by ``tests/tune/test_ray_shim.py``, which
checks the version and runs every function on a real local Ray: when Ray is upgraded, that test
says which of these moved. Each function states what public API is missing.

- :func:`set_restored_run_config`: ``Tuner.restore`` takes no ``RunConfig``, and callbacks are not
  restored with an experiment (Tune cannot pickle their clients), so a resumed sweep sets its
  callbacks, verbosity and progress reporter on the restored Tuner's run config
  (``Tuner._local_tuner.get_run_config()``).
- :func:`local_accelerator_type`: Ray's name for this machine's GPU (``A100``, ``H100``...), as
  the ``accelerator_type:<name>`` resource Ray gives the node, before Ray starts
  (``ray._private.accelerators.NvidiaGPUAcceleratorManager``).
- :func:`optuna_search_study`: the Optuna study inside ``ray.tune.search.optuna.OptunaSearch``
  and the trial numbers it has handed out (``_ot_study``, ``_ot_trials``), to fail the trials a
  killed driver left running.
- :func:`recorded_checkpoints`: the checkpoint ``Tuner.restore`` will continue each trial from,
  as the experiment state records it (``experiment_state-*.json``: its trials' run metadata is a
  cloudpickled checkpoint manager that only ``Trial.from_json_state`` and
  ``Trial.restore_run_metadata`` read), so ``raysweep resume`` checks that checkpoint and not a
  newer one a killed trial was still writing.
- :func:`tune_interrupt_handler`: the handler Tune's run loop installs for SIGINT/SIGUSR1, which
  ends the loop with a final, waited-for save of the experiment state: no public API stops a
  running ``Tuner.fit`` that way from inside the driver (:mod:`raysweep.tune.graceful` calls it on
  SIGTERM).

Failures are never swallowed wholesale: the errors an API change raises (``ImportError``,
``AttributeError``) are caught by name and logged as a warning naming the Ray version; anything
else propagates.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

RAY_VERSION = "2.60.0"


def _moved(what: str, err: Exception) -> None:
    import ray

    logger.warning("raysweep: %s is not where Ray %s had it (Ray %s here: %s); see raysweep/tune/ray_shim.py",
                   what, RAY_VERSION, ray.__version__, err)


def set_restored_run_config(tuner: Any, callbacks: list[Any], verbose: int, progress_reporter: Any = None) -> None:
    """Give a Tuner from ``Tuner.restore`` the `callbacks`, `verbose` level and
    `progress_reporter` of a new run (a restored experiment keeps none of them).

    Raises:
        RuntimeError: when Ray no longer keeps the run config where 2.60 did (the resumed sweep
            would otherwise run without its MLflow callback and lose its tracking).
    """
    try:
        run_config = tuner._local_tuner.get_run_config()
    except AttributeError as err:
        raise RuntimeError(f"Ray {RAY_VERSION}'s Tuner._local_tuner.get_run_config() is gone: a resumed sweep cannot "
                           f"set its callbacks ({err}); update raysweep/tune/ray_shim.py") from err
    run_config.callbacks = list(callbacks)
    run_config.verbose = verbose
    run_config.progress_reporter = progress_reporter


def local_accelerator_type() -> str | None:
    """Ray's accelerator type of this machine's first NVIDIA GPU (e.g. ``A100``), or None when
    there is none or NVML cannot be read (no driver); without it ``resources.accelerator_type``
    cannot be checked against this machine before Ray starts."""
    try:
        import ray._private.thirdparty.pynvml as pynvml
        from ray._private.accelerators import NvidiaGPUAcceleratorManager
    except ImportError as err:
        _moved("ray._private.accelerators.NvidiaGPUAcceleratorManager", err)
        return None
    try:
        return NvidiaGPUAcceleratorManager.get_current_node_accelerator_type()
    except AttributeError as err:
        _moved("NvidiaGPUAcceleratorManager.get_current_node_accelerator_type", err)
    except pynvml.NVMLError as err:  # a driver that answers init but not the device queries
        logger.warning("raysweep: cannot read this machine's GPU type through NVML: %s", err)
    return None


def optuna_search_study(search: Any) -> tuple[Any, set[int]]:
    """``(study, numbers)``: the Optuna study of an ``OptunaSearch`` and the numbers of the trials
    it has suggested; ``(None, set())`` before its study exists (nothing suggested yet)."""
    try:
        study = search._ot_study
        trials = search._ot_trials
    except AttributeError as err:
        _moved("OptunaSearch._ot_study / _ot_trials", err)
        return None, set()
    if study is None:
        return None, set()
    return study, {t.number for t in trials.values()}


def recorded_checkpoints(experiment_state: str) -> dict[str, tuple[str, str | None]] | None:
    """Trial id -> (status, the path of the checkpoint Tune restores it from, or None) from the
    text of an ``experiment_state-*.json``; None when Ray no longer reads its state this way."""
    import json

    try:
        from ray.tune.experiment import Trial
    except ImportError as err:
        _moved("ray.tune.experiment.Trial", err)
        return None
    found: dict[str, tuple[str, str | None]] = {}
    try:
        for trial_state, run_metadata in json.loads(experiment_state)["trial_data"]:
            trial = Trial.from_json_state(trial_state, stub=True)
            trial.restore_run_metadata(run_metadata)
            checkpoint = trial.checkpoint
            found[trial.trial_id] = (trial.status, checkpoint.path if checkpoint is not None else None)
    except (AttributeError, KeyError, TypeError) as err:
        _moved("Trial.from_json_state / restore_run_metadata / checkpoint of an experiment state", err)
        return None
    return found


def tune_interrupt_handler() -> Any:
    """The handler Tune's run loop installs for SIGUSR1 while it runs (``tune.tune``'s
    ``_setup_signal_catching``: SIGINT and SIGUSR1 end the loop, then Tune saves the experiment
    state with ``force=True, wait=True`` and stops the trials), or None outside that loop.

    No public API stops a running ``Tuner.fit`` gracefully from the driver itself: the documented
    way is to send SIGINT or SIGUSR1 to the driver. Calling the installed handler does the same
    without a second signal in flight (SIGUSR1's default action, if Tune's handler were already
    gone, would kill the process).
    """
    import signal

    handler = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
    if callable(handler) and getattr(handler, "__name__", "") == "signal_interrupt_tune_run":
        return handler
    return None
