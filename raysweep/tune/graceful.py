"""SIGTERM during ``Tuner.fit``: stop the trials at their next checkpoint, save Tune's experiment
state with every checkpoint the driver was told of, then exit as the CLI does (status 143).

Why this exists: the CLI turns SIGTERM into ``SystemExit`` (so ``finally`` blocks and Ray's
shutdown run). Raised inside Tune's run loop, that exception skipped the loop's own end, where
Tune writes the experiment state one last time (``runner.checkpoint(force=True, wait=True)``,
reached only when the loop stops on SIGINT/SIGUSR1). What was on disk was then the last
*periodic* snapshot: Tune writes it at most every 10 s, or after ``checkpoint.num_to_keep`` new
checkpoints of one trial, and uploads it asynchronously. On a loaded machine a driver stopped a few
seconds after its trial's first checkpoint left ``experiment_state-*.json`` with the trial
``PENDING`` and no checkpoint, and a resumed sweep restarted it from step 0 (issue 25). A SLURM
pre-limit signal and a requeue are exactly this stop.

With :func:`stop_gracefully_on_sigterm` around ``fit``:

1. SIGTERM arms :class:`StopAtCheckpoint` (a Tune callback): it waits until every trial running
   at the signal has reported its next checkpoint (or ended), at most :data:`GRACE_ENV` seconds
   (default :data:`DEFAULT_GRACE_S`), so no trial loses more than the steps since that checkpoint;
2. then it ends Tune's loop the way SIGINT does (:func:`raysweep.tune.ray_shim.tune_interrupt_handler`):
   Tune saves the experiment state (waiting for the upload) and stops the trials, which stay
   ``RUNNING``/``PENDING`` in the saved state, so ``raysweep resume`` continues each from its
   newest checkpoint and keeps the finished ones;
3. after ``fit`` returns, the SIGTERM handler of the caller runs (the CLI's: exit 143,
   "raysweep: terminated").

A second SIGTERM during the wait goes straight to the caller's handler (an immediate exit, as
before). Outside Tune's loop (Ray starting, a restore being read) SIGTERM is the caller's too:
nothing new has been told to Tune that could be saved.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray import tune

from raysweep.errors import RaysweepError
from raysweep.tune import ray_shim

logger = logging.getLogger(__name__)

#: Environment variable: the most seconds the driver waits for the running trials' next checkpoint
#: after SIGTERM before it stops them anyway (a SLURM script sets it below its ``--signal`` lead time).
GRACE_ENV = "RAYSWEEP_STOP_GRACE_S"
DEFAULT_GRACE_S = 60.0


def grace_seconds() -> float:
    """:data:`GRACE_ENV` as seconds (0: stop at once, saving the checkpoints already reported)."""
    text = os.environ.get(GRACE_ENV, "").strip()
    if not text:
        return DEFAULT_GRACE_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise RaysweepError(f"{GRACE_ENV}={text!r}: give the seconds to wait for the trials' next checkpoint "
                            f"after SIGTERM as a number >= 0 (default {DEFAULT_GRACE_S:g})")
    return value


class StopAtCheckpoint(tune.Callback):
    """Once :meth:`arm`\\ ed, ends Tune's loop when every trial running at that moment has reported a
    new checkpoint or ended, or when the grace period is over (checked at every loop step)."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.armed_at: float | None = None
        self.waiting: set[str] = set()
        self.stopped = False
        self._trials: list[Any] = []

    # -- Tune hooks (driver, main thread)
    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._trials = trials
        if self.armed_at is not None and not self.stopped:
            self._maybe_stop()

    def on_checkpoint(self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any) -> None:
        self._done_with(trial)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._done_with(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._done_with(trial)

    # -- the signal
    def arm(self) -> bool:
        """Start waiting for the running trials' next checkpoint; False when Tune's loop is not
        running (nothing to stop gracefully)."""
        if ray_shim.tune_interrupt_handler() is None:
            return False
        self.armed_at = time.monotonic()
        self.waiting = {t.trial_id for t in self._trials if getattr(t, "status", None) == "RUNNING"}
        print(f"raysweep: SIGTERM: stopping {len(self.waiting)} running trials at their next checkpoint (at most "
              f"{self.grace_s:g} s), then saving the experiment state", flush=True)
        self._maybe_stop()
        return True

    def _done_with(self, trial: Any) -> None:
        self.waiting.discard(trial.trial_id)
        if self.armed_at is not None and not self.stopped:
            self._maybe_stop()

    def _maybe_stop(self) -> None:
        assert self.armed_at is not None
        late = time.monotonic() - self.armed_at >= self.grace_s
        if self.waiting and not late:
            return
        handler = ray_shim.tune_interrupt_handler()
        self.stopped = True
        if late and self.waiting:
            logger.warning("raysweep: %d trials reported no checkpoint within %g s of SIGTERM; stopping them at their "
                           "last one", len(self.waiting), self.grace_s)
        if handler is not None:
            handler(signal.SIGUSR1, None)


@contextmanager
def stop_gracefully_on_sigterm(stopper: StopAtCheckpoint) -> Iterator[None]:
    """Around ``Tuner.fit``: SIGTERM stops the sweep through `stopper` (module docstring); once
    ``fit`` has returned, the caller's SIGTERM handler runs. A no-op off the main thread (signal
    handlers can only be set there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    received: list[int] = []
    # Tune leaves its SIGUSR1 handler installed after its loop ends: one left by an earlier fit in
    # this process (``extend --until-decided`` runs several) would pass for this fit's and swallow
    # the stop. Only a handler this fit's loop installs may count.
    usr1 = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
    if usr1 is not None and ray_shim.tune_interrupt_handler() is not None:
        usr1 = signal.SIG_DFL
        signal.signal(signal.SIGUSR1, usr1)

    def pass_on(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, previous)
        if callable(previous):
            previous(signum, frame)
        else:
            raise SystemExit(128 + signum)

    def on_sigterm(signum: int, frame: Any) -> None:
        if received or not stopper.arm():
            pass_on(signum, frame)
            return
        received.append(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)
        if usr1 is not None:
            signal.signal(signal.SIGUSR1, usr1)  # this fit's Tune handler goes too
    if received:
        pass_on(signal.SIGTERM, None)
