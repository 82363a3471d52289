"""The tracking writer: one driver thread doing a callback's MLflow calls in order, bounded in memory.

- **An outage** (:func:`raysweep.tracking.store.is_unreachable`: refused, reset, timed out, 502,
  503, 504, a locked SQLite file) keeps the job at the head of the queue, tried again after a
  back-off capped at 10 s, for as long as it lasts: per-run order is kept and nothing is skipped;
  one line says when it starts and ends.
- **A refusal** (any other answer of the store, a persistent 500 included) is tried
  :data:`MAX_TRIES` times, then the job leaves the queue, is counted (``on_error``) and journaled
  as ``unsent`` with its reason, and the rest flow on.
- **Memory is bounded**: at most :data:`MAX_QUEUED` jobs are held (a job with a result of a few
  dozen metrics takes about 3 kB, so ~6 MB; 200,001 unbounded jobs took 380 MB). Past that, jobs
  are spilled to the sweep's journal (:mod:`raysweep.tracking.journal`) as JSON, with every later
  job, so order holds; the writer reads them back, in order, once the queue has room again.

Jobs must be safe to repeat after a failure part-way (the callback's are: runs are found by their
tags before one is created, metrics carry the timestamp they were queued with).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raysweep.tracking import store
from raysweep.tracking.journal import Journal

logger = logging.getLogger(__name__)

#: Jobs held in the driver's memory; past this they go to the journal.
MAX_QUEUED = 2_000
#: Tries of a job the store refuses (not an outage) before it leaves the queue as unsent.
MAX_TRIES = 3
MAX_BACKOFF_S = 10.0  # longest pause between two tries of a job while the server is down
END_REASON = "still queued when the sweep ended (tracking.drain_timeout_s ran out)"

Rebuild = Callable[[dict[str, Any]], Callable[[], Any]]


@dataclass
class Job:
    """One MLflow update: `fn` does it; `record` (JSON) is what `rebuild` needs to make `fn` again
    after the job was spilled to the journal (``None``: it cannot be spilled, only journaled as unsent)."""

    what: str
    trial_id: str
    fn: Callable[[], Any]
    record: dict[str, Any] | None = None


class TrackingWriter:
    """One background thread performing MLflow jobs in the order they were submitted (module docstring).

    Args:
        uri: the tracking store (named in the outage lines).
        on_error: called once per job that leaves the queue refused.
        journal: the sweep's journal; ``None`` keeps every job in memory and only logs refusals.
        rebuild: turns a spilled job's record back into its function.
        max_backoff_s: longest pause (seconds) between two tries during an outage.
        max_queued: jobs held in memory before spilling (:data:`MAX_QUEUED`).
        max_tries: tries of a refused job (:data:`MAX_TRIES`).
    """

    def __init__(self, uri: str, on_error: Callable[[], None], journal: Journal | None = None,
                 rebuild: Rebuild | None = None, max_backoff_s: float = MAX_BACKOFF_S,
                 max_queued: int = MAX_QUEUED, max_tries: int = MAX_TRIES) -> None:
        self.uri = uri
        self._on_error = on_error
        self._journal = journal
        self._rebuild = rebuild
        self._max_backoff_s = max_backoff_s
        self._max_queued = max(1, max_queued)
        self._max_tries = max(1, max_tries)
        self._queue: deque[Job] = deque()
        self._spilled = 0  # jobs in the journal not read back yet
        self._unsettled = False  # an outage or a spill since the writer last caught up
        self._cond = threading.Condition()
        self._closing = False
        self._abandoned = False
        self._running: Job | None = None
        self._outage_since: float | None = None
        self.unsent_recorded = 0  # jobs journaled as unsent by this writer
        if journal is not None:
            journal.append("session", uri=uri)
        self._thread = threading.Thread(target=self._loop, name="raysweep-tracking-writer", daemon=True)
        self._thread.start()

    def submit(self, what: str, trial_id: str, fn: Callable[[], Any], record: dict[str, Any] | None = None) -> None:
        """Queue `fn` (one MLflow update of trial `trial_id`, described by `what`); never blocks on
        the store (a spill is one append to the journal)."""
        with self._cond:
            if self._journal is not None and (self._spilled or len(self._queue) >= self._max_queued):
                self._unsettled = True
                if record is None:
                    self._record_unsent(Job(what, trial_id, fn), "the in-memory queue was full and it cannot be spilled")
                else:
                    self._journal.append("spill", what=what, trial_id=trial_id, job=record)
                    self._spilled += 1
            else:
                self._queue.append(Job(what, trial_id, fn, record))
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Jobs queued, in progress or spilled to the journal."""
        with self._cond:
            return len(self._queue) + self._spilled

    @property
    def spilled(self) -> int:
        """Jobs in the journal not read back yet."""
        with self._cond:
            return self._spilled

    @property
    def in_memory(self) -> int:
        """Jobs held in memory (at most ``max_queued``)."""
        with self._cond:
            return len(self._queue)

    @property
    def in_outage(self) -> bool:
        """Whether the last try found the store unreachable."""
        return self._outage_since is not None

    def drain(self, timeout_s: float) -> list[Job]:
        """Wait up to `timeout_s` for every job, then stop the thread; returns the jobs held in
        memory and not done (spilled ones stay in the journal), each journaled as unsent."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while (self._queue or self._spilled) and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
            self._abandoned = True
            self._cond.notify_all()
            running = self._running
        # A job in flight may wait on a request timeout; the thread is a daemon and stops after it.
        self._thread.join(timeout=2.0 if running is not None else 60.0)
        with self._cond:
            # Listed after the join: a job that finished while joining is not unsent.
            left = list(self._queue)
            for job in left:
                self._record_unsent(job, END_REASON)
            if self._journal is not None:
                if self._unsettled:  # what memory held is journaled now: only the spilled lines stay open
                    self._journal.append("closed", spilled=self._spilled)
                self._journal.close()
        return left

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._spilled and not self._closing:
                    self._cond.wait()
                if self._abandoned:
                    return
                if not self._queue and self._spilled:
                    self._read_back()
                if not self._queue:
                    if self._closing:
                        self._settle()
                        return
                    continue
                job = self._running = self._queue[0]
            done = self._run(job)
            with self._cond:
                self._running = None
                if not done:
                    return
                if self._queue and self._queue[0] is job:
                    self._queue.popleft()
                if not self._queue and not self._spilled:
                    self._settle()
                self._cond.notify_all()

    def _read_back(self) -> None:
        """Move the next spilled jobs (up to half the bound) from the journal back into the queue
        (called with the lock held; new submissions keep going to the journal until all are back)."""
        assert self._journal is not None
        for row in self._journal.read_spilled(min(self._spilled, max(1, self._max_queued // 2))):
            self._spilled -= 1
            what, trial_id = str(row.get("what", "")), str(row.get("trial_id", ""))
            try:
                if self._rebuild is None:
                    raise ValueError("no rebuild function")
                fn = self._rebuild(row["job"])
            except Exception as err:  # noqa: BLE001 - a record the callback cannot read is journaled
                self._record_unsent(Job(what, trial_id, lambda: None), f"spilled, not replayable: {err}")
                continue
            self._queue.append(Job(what, trial_id, fn, row["job"]))
        if not self._queue and self._spilled:
            # The count and the file disagree (a line lost by a full disk?): what is left is journaled.
            self._spilled = 0

    def _settle(self) -> None:
        if self._unsettled and self._journal is not None:
            self._journal.append("caught_up")
        self._unsettled = False

    def _record_unsent(self, job: Job, reason: str, refused: bool = False) -> None:
        self.unsent_recorded += 1
        if self._journal is not None:
            self._journal.append("unsent", what=job.what, trial_id=job.trial_id, reason=reason, refused=refused,
                                 job=job.record)

    def _run(self, job: Job) -> bool:
        """Do `job`, retrying as the module docstring says; False when the writer was stopped first."""
        outages = refusals = 0
        while True:
            try:
                job.fn()
            except Exception as err:  # noqa: BLE001 - tracking never raises into the sweep
                if store.is_unreachable(err):
                    self._note_outage(err)
                    delay = min(self._max_backoff_s, 0.5 * 2 ** min(outages, 8))
                    outages += 1
                else:
                    refusals += 1
                    if refusals >= self._max_tries:
                        self._on_error()
                        reason = store.error_reason(err)
                        logger.error("raysweep tracking: %s of trial %s failed %d times, recorded as unsent: %s",
                                     job.what, job.trial_id, refusals, reason)
                        with self._cond:
                            self._record_unsent(job, reason, refused=True)
                        return True
                    delay = 0.2 * refusals
                with self._cond:
                    if self._abandoned:
                        return False
                    self._cond.wait(delay)
                    if self._abandoned:
                        return False
                continue
            self._note_back()
            return True

    def _note_outage(self, err: BaseException) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            with self._cond:
                self._unsettled = True
                if self._journal is not None:
                    self._journal.append("outage", uri=self.uri, reason=store.error_reason(err))
            reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            print(f"raysweep: tracking at {self.uri} unreachable ({reason}); trials keep running, "
                  f"{self.pending} updates queued and retried", file=sys.stderr, flush=True)

    def _note_back(self) -> None:
        if self._outage_since is not None:
            print(f"raysweep: tracking at {self.uri} answers again after "
                  f"{time.monotonic() - self._outage_since:.0f} s; sending {self.pending} queued updates",
                  file=sys.stderr, flush=True)
            self._outage_since = None
