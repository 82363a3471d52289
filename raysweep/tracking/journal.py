"""The tracking journal: every tracking update of a sweep that has not reached MLflow, on disk.

``<sweep dir>/tracking_journal.jsonl`` is append-only JSON lines, one event a line:

- ``session``: a tracking writer started (one per driver run of the sweep);
- ``outage``: the store stopped answering; until the next ``caught_up`` of the same session, updates
  may be held only in the driver's memory, so a driver killed then (SIGKILL) leaves this open;
- ``spill``: an update moved out of the driver's memory because the in-memory queue was full
  (:data:`raysweep.tracking.writer.MAX_QUEUED`), with what the writer needs to do it later
  (``job``); the writer reads these back in order once the store answers;
- ``caught_up``: the writer sent everything queued and spilled in this session (settles the
  session's ``outage`` and ``spill`` lines);
- ``closed``: the sweep ended before the writer caught up; what it held in memory is journaled as
  ``unsent`` (settles the ``outage``; the session's ``spill`` lines stay unsent);
- ``unsent``: an update that left the queue without reaching MLflow, with its ``reason`` (the store
  refused it every try, or it was still queued when the sweep ended): only ``raysweep sync``, which
  rebuilds MLflow from the trials' own files, settles these.

Each line is written with one ``write`` (a driver killed by SIGKILL loses nothing the kernel has)
and fsynced at least every :data:`FSYNC_EVERY_S` seconds and at every ``outage``, ``unsent`` and
``caught_up`` line. ``raysweep sync`` removes the journal once MLflow holds the whole sweep. The
journal of a sweep in object storage lives on the driver (:func:`journal_path`), as a bucket
cannot append.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysweep import storage

JOURNAL_FILE = "tracking_journal.jsonl"
#: The file older sweeps listed their unsent updates in (read by ``sync`` and the notice, then removed).
LEGACY_PENDING_FILE = "tracking_pending.json"
FSYNC_EVERY_S = 0.5  # longest time a spilled line waits for its fsync (power loss; SIGKILL loses nothing)
_SETTLING = ("outage", "unsent", "caught_up", "closed", "session")


def _plain(value: Any) -> Any:
    """A JSON-able stand-in for `value`: an object's ``to_record()`` (the writer's trial views),
    numpy scalars and arrays as numbers and lists, else its str."""
    for method in ("to_record", "item", "tolist"):
        convert = getattr(value, method, None)
        if callable(convert):
            try:
                return convert()
            except (TypeError, ValueError):
                continue
    return str(value)


def journal_path(sweep_dir: str) -> Path:
    """Where the journal of the sweep in `sweep_dir` lives: in the sweep directory when it is local,
    else in a driver folder named after the sweep directory."""
    if not storage.is_uri(sweep_dir):
        return storage.local_path(sweep_dir) / JOURNAL_FILE
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in sweep_dir)
    return Path(tempfile.gettempdir()) / "raysweep-driver" / "journals" / slug / JOURNAL_FILE


class Journal:
    """The appending side of a sweep's journal (one per tracking writer; thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._last_fsync = 0.0
        self._read_offset: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def append(self, event: str, **fields: Any) -> None:
        """Append one line (``{"event": event, "t": unix seconds, **fields}``); numpy values are
        written as numbers, other values JSON cannot hold as their ``str``."""
        line = json.dumps({"event": event, "t": round(time.time(), 3), **fields}, default=_plain) + "\n"
        with self._lock:
            fd = self._open()
            if self._read_offset is None:
                self._read_offset = os.fstat(fd).st_size  # spills of this writer start here
            os.write(fd, line.encode())
            now = time.monotonic()
            if event in _SETTLING or now - self._last_fsync >= FSYNC_EVERY_S:
                os.fsync(fd)
                self._last_fsync = now

    def read_spilled(self, limit: int) -> list[dict[str, Any]]:
        """The next `limit` (at most) ``spill`` lines this journal appended, in order, each once."""
        with self._lock:
            if self._fd is None or self._read_offset is None:
                return []
            out: list[dict[str, Any]] = []
            with open(self.path, "rb") as file:
                file.seek(self._read_offset)
                while len(out) < limit:
                    line = file.readline()
                    if not line.endswith(b"\n"):
                        break
                    self._read_offset += len(line)
                    row = json.loads(line)
                    if row.get("event") == "spill":
                        out.append(row)
            return out

    def close(self) -> None:
        """Fsync and close the file (appending again reopens it)."""
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None


@dataclass
class JournalState:
    """What a sweep's journal (and an older sweep's ``tracking_pending.json``) says is not in MLflow.

    Attributes:
        unsent: updates recorded as not sent (``spill`` lines not caught up, ``unsent`` lines and the
            updates the legacy file lists).
        interrupted: driver runs that stopped during an outage before catching up or closing
            (killed: their in-memory updates are not counted in `unsent`).
        reasons: reason -> number of ``unsent`` lines.
        refused: ``unsent`` lines of updates the store refused (not an outage).
    """

    unsent: int = 0
    interrupted: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    refused: int = 0

    @property
    def behind(self) -> bool:
        """Whether MLflow may lack something of the sweep."""
        return bool(self.unsent or self.interrupted)


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below; a missing file is an empty journal
    except FileNotFoundError:
        return
    with file:
        for line in file:
            try:
                row = json.loads(line)
            except ValueError:  # the last line of a driver killed mid-write
                continue
            if isinstance(row, dict):
                yield row


def read_state(sweep_dir: str) -> JournalState:
    """The :class:`JournalState` of the sweep in `sweep_dir` (empty when it has no journal)."""
    state = JournalState()
    spilled, outage = 0, False

    def end_session() -> None:
        nonlocal spilled, outage
        state.unsent += spilled
        state.interrupted += int(outage)
        spilled, outage = 0, False

    for row in _lines(journal_path(sweep_dir)):
        event = row.get("event")
        if event == "session":
            end_session()
        elif event == "outage":
            outage = True
        elif event == "spill":
            spilled += 1
        elif event == "caught_up":
            spilled, outage = 0, False
        elif event == "closed":
            outage = False
        elif event == "unsent":
            state.unsent += 1
            reason = str(row.get("reason", "unknown"))
            state.reasons[reason] = state.reasons.get(reason, 0) + 1
            state.refused += int(bool(row.get("refused")))
    end_session()
    legacy = storage.read_text(f"{sweep_dir.rstrip('/')}/{LEGACY_PENDING_FILE}")
    if legacy:
        try:
            unsent = json.loads(legacy).get("unsent", {})
            state.unsent += sum(len(jobs) for jobs in unsent.values()) if isinstance(unsent, dict) else 1
        except (ValueError, AttributeError, TypeError):
            state.unsent += 1
    return state


def unsent_notice(sweep_dir: str) -> str | None:
    """The one line ``resume``, ``report`` and ``claims`` print when MLflow lacks part of the sweep
    in `sweep_dir` (``None`` when its journal records nothing unsent)."""
    try:
        state = read_state(sweep_dir)
    except OSError:
        return None
    if not state.behind:
        return None
    parts = []
    if state.unsent:
        parts.append(f"{state.unsent} tracking updates recorded as unsent")
    if state.interrupted:
        parts.append(f"{state.interrupted} driver run(s) stopped during a tracking outage")
    return f"raysweep: MLflow is behind this sweep ({'; '.join(parts)}): unsent jobs: run `raysweep sync {sweep_dir}`"


def remove(sweep_dir: str) -> bool:
    """Remove the journal and an older sweep's ``tracking_pending.json``; whether either existed."""
    removed = False
    path = journal_path(sweep_dir)
    if path.is_file():
        path.unlink()
        removed = True
    legacy = f"{sweep_dir.rstrip('/')}/{LEGACY_PENDING_FILE}"
    if not storage.is_uri(sweep_dir):
        file = storage.local_path(legacy)
        if file.is_file():
            file.unlink()
            removed = True
        return removed
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(legacy)
    if fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound:
        fs.delete_file(inner)
        removed = True
    return removed


def experiment_notices(tracking_uri: str, experiment: str) -> list[str]:
    """:func:`unsent_notice` of every local sweep tracked in `experiment` (``report`` and
    ``claims`` take an experiment, not a sweep directory): each parent run's ``raysweep.storage``
    tag is its sweep directory (:func:`raysweep.storage.parent_run_key`). Sweeps in object storage
    are not checked (their journal is on the driver that ran them); a store that cannot be read
    gives no notice (the command itself reports it)."""
    from raysweep.tracking import store

    try:
        client = store.make_client(tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        parents = store.search_all(client, [found.experiment_id],
                                   f"tags.`{store.ROLE_TAG}` = '{store.ROLE_SWEEP}'")
    except Exception:  # noqa: BLE001 - a notice never fails the command
        return []
    notices = []
    for sweep_dir in sorted({run.data.tags.get(store.STORAGE_TAG, "") for run in parents}):
        if sweep_dir and not storage.is_uri(sweep_dir) and Path(sweep_dir).is_dir():
            notice = unsent_notice(sweep_dir)
            if notice:
                notices.append(notice)
    return notices
