"""The report a running sweep rewrites: ``<sweep dir>/report/`` fills in as trials finish.

:class:`LiveReport` is a Tune callback that ``raysweep sweep``, ``resume`` and ``extend`` add (the
CLI wires it, from ``tracking.report_every``). When a trial has ended and at least ``every_s``
seconds have passed since the last render began, it starts ``raysweep report --in-progress TRIALS``
in a separate, lower-priority process (the page gets a banner "in progress: N of M trials finished"
and reloads itself), so rendering never holds the Tune loop or a trial up; a render still running
when the next is due is left to finish and the next waits. Each render is drawn into a staging folder
and published file by file, the page last, so a browser never reads half a page. When the sweep
ends (after the tracking writer has drained), a last render without the banner writes the report as
``raysweep report`` would, logged to the sweep's parent run; a render that fails costs one line on
stderr, never the sweep.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

__all__ = ["LiveReport"]

STAGING = ".staging"
RENDER_LOG = ".render.log"  # a live render's stderr (a file, not a pipe: a full pipe would stall it)
#: How long the end of a sweep waits for the last render (and for a live one still running before it).
FINAL_TIMEOUT_S = 600.0


def publish(staging: Path, out: Path) -> None:
    """Move a rendered report from `staging` into `out`: figures first, the page last, then the
    figures the new page no longer shows are removed."""
    out.mkdir(parents=True, exist_ok=True)
    fresh = {path.relative_to(staging) for path in staging.rglob("*") if path.is_file()}
    for relative in sorted(fresh, key=lambda r: r.name == "index.html"):
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / relative, target)
    plots = out / "plots"
    if plots.is_dir():
        for stale in plots.iterdir():
            if stale.is_file() and stale.relative_to(out) not in fresh:
                stale.unlink()
    shutil.rmtree(staging, ignore_errors=True)


def _lower_priority() -> None:  # runs in the child before exec: trials first
    try:
        os.nice(10)
    except OSError:
        pass


class LiveReport(tune.Callback):
    """Rewrites a running sweep's report (see the module docstring).

    Args:
        experiment: the sweep's MLflow experiment.
        tracking_uri: its tracking store.
        out: the report folder (``<sweep dir>/report``, local).
        every_s: the least time between the starts of two renders while the sweep runs.
        total: the sweep's trials in all (None: its search decides).
        clock: seconds, monotonic (for the tests).
    """

    def __init__(self, experiment: str, tracking_uri: str, out: Path, every_s: float, total: int | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.experiment, self.tracking_uri, self.out = experiment, tracking_uri, Path(out)
        self.every_s, self.total, self.clock = every_s, total, clock
        self.due = False  # a trial ended since the last render began
        self.started_at = -float("inf")
        self.process: subprocess.Popen | None = None
        self.renders = 0  # live renders published
        self.final: Path | None = None  # the page the last render wrote

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the run config's callbacks with the experiment; a running render is not carried over.
        return {**self.__dict__, "process": None}

    def command(self, in_progress: bool) -> list[str]:
        """The ``raysweep report`` of a render into the staging folder."""
        command = [sys.executable, "-m", "raysweep.cli", "report", "--experiment", self.experiment,
                   "--tracking-uri", self.tracking_uri, "--out", str(self.out / STAGING)]
        if in_progress:
            command += ["--in-progress", str(self.total or 0), "--no-log"]
        return command

    # --------------------------------------------------------------------------- Tune hooks
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.due = True

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.due = True

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._collect()
        if self.due and self.process is None and self.clock() - self.started_at >= self.every_s:
            self._start()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.process is not None:  # the live render running now: let it finish, then the last one
            self._wait(self.process)
            self._collect()
        shutil.rmtree(self.out / STAGING, ignore_errors=True)
        (self.out / RENDER_LOG).unlink(missing_ok=True)
        try:
            done = subprocess.run(self.command(in_progress=False), capture_output=True, text=True,
                                  timeout=FINAL_TIMEOUT_S, preexec_fn=_lower_priority)
        except subprocess.TimeoutExpired:
            self._fail(f"not finished after {FINAL_TIMEOUT_S:g} s")
            return
        if done.returncode != 0:
            self._fail(_last_line(done.stderr))
            return
        publish(self.out / STAGING, self.out)
        self.final = self.out / "index.html"
        print(f"raysweep: report: {self.final.resolve().as_uri()}", flush=True)

    # ------------------------------------------------------------------------------ renders
    def _start(self) -> None:
        shutil.rmtree(self.out / STAGING, ignore_errors=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.due, self.started_at = False, self.clock()
        with open(self.out / RENDER_LOG, "w") as log:
            self.process = subprocess.Popen(self.command(in_progress=True), stdout=subprocess.DEVNULL, stderr=log,
                                            preexec_fn=_lower_priority)

    def _collect(self) -> None:
        """Publish a live render that has ended (a failed one is said in one line; the next may work)."""
        if self.process is None or self.process.poll() is None:
            return
        process, self.process = self.process, None
        stderr = (self.out / RENDER_LOG).read_text(errors="replace") if (self.out / RENDER_LOG).is_file() else ""
        if process.returncode == 0:
            publish(self.out / STAGING, self.out)
            if self.renders == 0:
                print(f"raysweep: the report fills in as trials finish: {(self.out / 'index.html').resolve().as_uri()}",
                      flush=True)
            self.renders += 1
        elif "holds no trial runs" not in stderr and "no experiment" not in stderr:  # too early: nothing in MLflow yet
            self._fail(_last_line(stderr))

    def _wait(self, process: subprocess.Popen) -> None:
        try:
            process.wait(timeout=FINAL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _fail(self, why: str) -> None:
        print(f"raysweep: the report in {self.out} was not rewritten: {why}", file=sys.stderr, flush=True)


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
