"""`raysweep extend`: a finished grid sweep grows by its new trials only, in the same directory and
MLflow parent run; changes to anything but what varies are refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tune_helpers import tiny_sweep, write_sweep

from raysweep.cli import main
from raysweep.tracking.store import (
    PARENT_TAG,
    ROLE_SWEEP,
    ROLE_TAG,
    STATUS_TAG,
    make_client,
    search_all,
    tracking_uri_for,
)

pytestmark = pytest.mark.slow


def _trial_dirs(sweep_dir: Path) -> dict[str, Path]:
    return {d.name: d for d in sweep_dir.iterdir() if (d / "params.json").is_file()}


def _fingerprint(trial_dir: Path) -> dict[str, tuple[bytes, int]]:
    """A finished trial's outputs byte for byte with their modification times."""
    files = [trial_dir / "train" / "final.json", trial_dir / "train" / "metrics.jsonl", trial_dir / "result.json"]
    return {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in files}


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_extend_runs_only_the_new_trials(ray_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "runs"
    path = write_sweep(tmp_path, tiny_sweep("growing", search={"mode": "grid", "seeds": [0, 1]}))
    assert main(["sweep", str(path), "--storage", str(storage), "--address", ray_address]) == 0
    sweep_dir = storage / "growing"
    before = {tid: _fingerprint(d) for tid, d in _trial_dirs(sweep_dir).items()}
    assert len(before) == 2

    # Refused in one line naming the key, before anything starts.
    refusals = {
        "trial.train.max_steps": ["train.max_steps=40"],
        "search.mode": ["search.mode=random", "search.distributions.train.lr={uniform: [0.001, 0.01]}"],
        "resources.cpus_per_worker": ["search.seeds=[0,1,2]", "resources.cpus_per_worker=0.5"],
        "search.seeds": ["search.seeds=[0,5]"],  # drops seed 1, which ran
    }
    capsys.readouterr()
    for key, overrides in refusals.items():
        args = ["extend", str(sweep_dir), *[a for o in overrides for a in ("--set", o)], "--address", ray_address]
        assert main(args) == 2, key
        line = _one_error_line(capsys)
        assert line.startswith("raysweep: error: ") and key in line, line
    assert main(["extend", str(sweep_dir)]) == 2
    assert "--set" in _one_error_line(capsys)

    # Nothing new (the same seeds, reordered): says so, starts nothing.
    assert main(["extend", str(sweep_dir), "--set", "search.seeds=[1,0]", "--address", ray_address]) == 0
    assert "nothing new" in capsys.readouterr().out
    assert set(_trial_dirs(sweep_dir)) == set(before)

    assert main(["extend", str(sweep_dir), "--set", "search.seeds=[0,1,2,3]", "--address", ray_address]) == 0
    trials = _trial_dirs(sweep_dir)
    added = sorted(set(trials) - set(before))
    assert len(trials) == 4 and len(added) == 2
    assert {tid: _fingerprint(trials[tid]) for tid in before} == before  # finished trials untouched
    for tid in added:
        assert (trials[tid] / "train" / "final.json").is_file()
    grown = yaml.safe_load((sweep_dir / "sweep.yaml").read_text())
    assert grown["search"]["seeds"] == [0, 1, 2, 3]

    client = make_client(tracking_uri_for(storage, None))
    experiment_id = client.get_experiment_by_name("growing").experiment_id
    parents = search_all(client, [experiment_id], f"tags.`{ROLE_TAG}` = '{ROLE_SWEEP}'")
    assert len(parents) == 1
    children = search_all(client, [experiment_id], f"tags.`{PARENT_TAG}` = '{parents[0].info.run_id}'")
    assert sorted(int(c.data.params["train.seed"]) for c in children) == [0, 1, 2, 3]
    assert {c.data.tags[STATUS_TAG] for c in children} == {"finished"}
    assert parents[0].data.tags["raysweep.trials"] == "4"
    (tmp_path / "artifacts").mkdir()
    logged = Path(client.download_artifacts(parents[0].info.run_id, "sweep.yaml", str(tmp_path / "artifacts")))
    assert yaml.safe_load(logged.read_text())["search"]["seeds"] == [0, 1, 2, 3]  # the parent shows the grown sweep

    # The report shows the grown sweep: every run, old and new, in its table of runs.
    report = tmp_path / "report"
    assert main(["report", "--experiment", "growing", "--storage", str(storage), "--out", str(report), "--no-log"]) == 0
    html = (report / "index.html").read_text()
    assert all(c.info.run_id in html for c in children)

    # A later resume restores the extension (all finished): nothing reruns.
    assert main(["resume", str(sweep_dir), "--address", ray_address]) == 0
    assert set(_trial_dirs(sweep_dir)) == set(trials)
    assert {tid: _fingerprint(trials[tid]) for tid in before} == before
