"""The private Ray APIs behind raysweep.tune.ray_shim, pinned to the installed Ray and run on a real
local Ray: when Ray is upgraded, this file says which of them moved."""

from __future__ import annotations

from pathlib import Path

import ray
from ray import tune

from raysweep.tune import ray_shim


def test_ray_is_the_version_the_shim_was_written_for() -> None:
    assert ray.__version__ == ray_shim.RAY_VERSION == "2.60.0"


def test_local_accelerator_type_answers_without_raising() -> None:
    kind = ray_shim.local_accelerator_type()
    assert kind is None or (isinstance(kind, str) and kind)


def test_optuna_search_study_and_its_trial_numbers() -> None:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(space={"x": tune.uniform(0.0, 1.0)}, metric="m", mode="min")
    study, numbers = ray_shim.optuna_search_study(search)
    assert isinstance(study, optuna.Study) and numbers == set()
    search.suggest("t1")
    search.suggest("t2")
    assert ray_shim.optuna_search_study(search)[1] == {0, 1}


class _Seen(tune.Callback):
    def __init__(self) -> None:
        self.completed: list[str] = []

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.completed.append(trial.config["x"])


def test_a_restored_tuner_runs_with_new_callbacks_and_verbosity(ray_address: str, tmp_path: Path) -> None:
    marker = tmp_path / "failed_once"

    def trainable(config: dict) -> None:  # nested: pickled by value, no import on the workers
        if config["x"] == 2 and not Path(config["marker"]).exists():
            Path(config["marker"]).write_text("x")
            raise RuntimeError("first attempt fails")
        tune.report({"score": float(config["x"])})

    space = {"x": tune.grid_search([1, 2]), "marker": str(marker)}
    first = tune.Tuner(trainable, param_space=space,
                       run_config=tune.RunConfig(name="shim", storage_path=str(tmp_path), verbose=0)).fit()
    assert first.num_errors == 1
    # The experiment state as Tune will restore it: the statuses, and no checkpoint (none reported;
    # a recorded checkpoint's path is checked in tests/tune/test_sweep_resume.py).
    [state] = sorted((tmp_path / "shim").glob("experiment_state-*.json"))
    recorded = ray_shim.recorded_checkpoints(state.read_text())
    assert sorted(recorded.values()) == [("ERROR", None), ("TERMINATED", None)]
    restored = tune.Tuner.restore(str(tmp_path / "shim"), trainable=trainable, resume_errored=True)
    seen = _Seen()
    reporter = tune.CLIReporter(metric_columns=["score"])
    ray_shim.set_restored_run_config(restored, [seen], 0, reporter)
    again = restored.fit()
    assert again.num_errors == 0 and seen.completed == [2]  # the new callback saw the rerun trial



def test_only_the_running_fits_tune_handler_counts() -> None:
    """Tune leaves its SIGUSR1 handler installed after its loop ends; around the next fit, before
    that fit's loop installs its own, no handler counts (a stale one would swallow a SIGTERM stop),
    and the handler of before is back afterwards when no Tune loop replaced it."""
    import signal

    from raysweep.tune.graceful import StopAtCheckpoint, stop_gracefully_on_sigterm

    def signal_interrupt_tune_run(sig: int, frame: object) -> None:  # as tune.tune names its handler
        raise AssertionError("a stale handler was called")

    original = signal.signal(signal.SIGUSR1, signal_interrupt_tune_run)
    try:
        assert ray_shim.tune_interrupt_handler() is signal_interrupt_tune_run
        with stop_gracefully_on_sigterm(StopAtCheckpoint(0)):
            assert ray_shim.tune_interrupt_handler() is None
            assert StopAtCheckpoint(0).arm() is False  # SIGTERM here goes to the caller's handler
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR1, original)
