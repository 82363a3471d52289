"""What the tracking writer holds of a Tune trial: a snapshot taken when a Tune hook fires
(:func:`view_of`), since Tune's trial object keeps changing on Tune's thread while the writer
thread works through its queue, and its JSON form for the journal (:meth:`TrialView.to_record`,
:func:`view_from_record`), so a spilled or unsent update can be rebuilt."""

from __future__ import annotations

import base64
import pickle
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrialView:
    """What the tracking writer needs of a Tune trial, copied when a hook fires: Tune's trial
    object keeps changing on Tune's thread while the writer works through its queue on its own."""

    trial_id: str
    name: str
    config: dict[str, Any]
    local_path: str | None = None
    path: str | None = None
    last_result: dict[str, Any] = field(default_factory=dict)
    checkpoint: Any = None
    num_failures: Any = ""

    def __str__(self) -> str:
        return self.name

    def to_record(self) -> dict[str, Any]:
        """This view as JSON for the journal (:func:`view_from_record` reads it back); the
        checkpoint, a Ray object, as its pickle in base64."""
        checkpoint = None
        if self.checkpoint is not None:
            try:
                checkpoint = base64.b64encode(pickle.dumps(self.checkpoint)).decode()
            except Exception:  # noqa: BLE001 - without it the trial's own folders are still searched
                checkpoint = None
        return {"trial_id": self.trial_id, "name": self.name, "config": self.config, "local_path": self.local_path,
                "path": self.path, "last_result": self.last_result, "checkpoint": checkpoint,
                "num_failures": self.num_failures}


def view_from_record(record: dict[str, Any]) -> TrialView:
    """The :class:`TrialView` of :meth:`TrialView.to_record`."""
    checkpoint = record.get("checkpoint")
    return TrialView(
        trial_id=str(record["trial_id"]), name=str(record.get("name", record["trial_id"])),
        config=dict(record.get("config") or {}), local_path=record.get("local_path"), path=record.get("path"),
        last_result=dict(record.get("last_result") or {}),
        checkpoint=pickle.loads(base64.b64decode(checkpoint)) if checkpoint else None,  # noqa: S301 - our own file
        num_failures=record.get("num_failures", ""),
    )


def view_of(trial: Any) -> TrialView:
    """The :class:`TrialView` of a Tune trial now."""
    if isinstance(trial, TrialView):
        return trial

    def attribute(name: str) -> Any:
        try:
            return getattr(trial, name)
        except Exception:  # noqa: BLE001 - Tune raises when a trial has no storage yet
            return None

    return TrialView(
        trial_id=str(trial.trial_id), name=str(trial), config=dict(attribute("config") or {}),
        local_path=attribute("local_path"), path=attribute("path"),
        last_result=dict(attribute("last_result") or {}), checkpoint=attribute("checkpoint"),
        num_failures=attribute("num_failures"),
    )
