"""Bad input, nothing started: every user error of the CLI exits 2 with one line naming the key, file
or address, without a traceback, before anything starts (issue 14, behaviour 7).

Each case runs the real ``raysweep`` console script of the virtual environment as a subprocess. The
cases run concurrently (a few at a time) in one module fixture, so the module costs about as much
as its slowest few commands; each case is still its own test. Besides the exit status and the one
line, a case asserts that nothing was started or written: no sweep directory or ``mlflow.db`` under
its ``--storage``, no ``--out`` folder, and, for ``sweep``, no Ray session (``RAY_TMPDIR`` points
at a folder of the case that Ray would create on start).

The object-storage cases (a missing bucket, refused credentials) are in the storage tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from tiny_trial import tiny_trial_tree

sys.path.insert(0, str(Path(__file__).resolve().parent / "tune"))
from tune_helpers import tiny_sweep, write_sweep  # noqa: E402

RAYSWEEP = Path(sys.executable).with_name("raysweep")
CASE_TIMEOUT_S = 90
PARALLEL = 3


def _closed_port() -> int:
    """A loopback port nothing listens on (bound and released: refused when connected to)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Case:
    """One bad command: its arguments (``{w}`` is the workspace), the words its error line must
    contain, and the paths (relative to the workspace) it must not create."""

    argv: list[str]
    named: list[str]
    not_created: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _sweep_file(w: Path, name: str, trial: dict[str, object] | None = None, **blocks: object) -> str:
    raw = tiny_sweep(name, **blocks)
    for key, value in (trial or {}).items():
        node = raw["trial"]
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return str(write_sweep(w / "sweeps", raw))


def _trial_twice(w: Path) -> str:
    """A sweep file whose trial block gives objective.beta nested and dotted, with two values."""
    raw = tiny_sweep("trial_twice")
    raw["trial"]["objective.beta"] = 0.5
    return str(write_sweep(w / "sweeps", raw))


def _train_run(folder: Path, trial_file: Path) -> Path:
    """A finished run of the tiny trial (20 steps: checkpoints at steps 10 and 20) in ``folder/run``."""
    out = folder / "run"
    subprocess.run([str(RAYSWEEP), "train", str(trial_file), "--out", str(out), "--no-progress"], check=True,
                   capture_output=True, timeout=CASE_TIMEOUT_S, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return out


def _truncate(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(size // 2)


def build_cases(w: Path) -> tuple[dict[str, Case], int]:
    """Every case, by test id, with the files it needs written under the workspace `w`, and the port
    that ``ui-port-in-use`` finds busy (the fixture holds it)."""
    (w / "sweeps").mkdir()
    (w / "trial.yaml").write_text(yaml.safe_dump(tiny_trial_tree()))
    (w / "not_yaml.yaml").write_text("name: x\ntrial: [1, 2\n")
    (w / "empty_images").mkdir()
    (w / "empty_images" / "notes.txt").write_text("no images here")
    (w / "not_a_sweep").mkdir()
    (w / "not_a_sweep" / "readme.txt").write_text("hello")
    (w / "no_db").mkdir()
    (w / "store").mkdir()
    (w / "store" / "mlflow.db").write_bytes(b"")  # a file is all `ui` checks before the port
    dead = f"http://127.0.0.1:{_closed_port()}"
    good = _sweep_file(w, "good")
    ftp = _sweep_file(w, "ftp", tracking={"uri": "ftp://files.example.com/mlflow"})
    dead_http = _sweep_file(w, "dead_http", tracking={"uri": dead})
    missing_root = _sweep_file(w, "missing_root", {"data.dataset": "image_folder", "data.root": str(w / "nowhere")})
    empty_root = _sweep_file(w, "empty_root", {"data.dataset": "image_folder", "data.root": str(w / "empty_images")})
    # Two checkpoints whose state.pt were cut short (torch writes a zip: its directory is at the end).
    all_corrupt = w / "all_corrupt"
    for step in (10, 20):
        ckpt = all_corrupt / "checkpoints" / f"step_{step:09d}"
        ckpt.mkdir(parents=True)
        (ckpt / "state.pt").write_bytes(b"PK\x03\x04" + bytes(200))
    # A sweep directory whose unfinished trial's newest Tune checkpoint was cut short.
    damaged = w / "damaged_sweep"
    (damaged / "t0001" / "checkpoint_000001").mkdir(parents=True)
    (damaged / "sweep.yaml").write_text(yaml.safe_dump(tiny_sweep("damaged")))
    (damaged / "t0001" / "checkpoint_000001" / "state.pt").write_bytes(b"PK\x03\x04" + bytes(200))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy_port = busy.getsockname()[1]
    ray_tmp = {"RAY_TMPDIR": str(w / "ray_tmp")}
    sweep_cmd = ["sweep", "--storage", str(w / "storage")]
    return {
        # validate: the sweep file itself
        "validate-missing-file": Case(["validate", str(w / "nope.yaml")], ["nope.yaml", "no such config file"]),
        "validate-not-yaml": Case(["validate", str(w / "not_yaml.yaml")], ["not_yaml.yaml", "not valid YAML"]),
        "validate-trial-file": Case(["validate", str(w / "trial.yaml")], ["trial.yaml", "not a sweep file"]),
        "validate-unknown-key": Case(["validate", _sweep_file(w, "unknown", {"train.max_stepz": 3})],
                                     ["trial.train.max_stepz", "unknown key"]),
        "validate-wrong-type": Case(["validate", _sweep_file(w, "wrong_type", {"train.max_steps": "many"})],
                                    ["trial.train.max_steps", "integer"]),
        "validate-negative-size": Case(["validate", _sweep_file(w, "negative", {"train.batch_size": -4})],
                                       ["trial.train.batch_size", "greater than or equal to 1"]),
        "validate-negative-set": Case(["validate", good, "--set", "data.image_size=-16"], ["data.image_size"]),
        "validate-bad-set-syntax": Case(["validate", good, "--set", "train.max_steps"],
                                        ["--set train.max_steps", "dotted.key=value"]),
        "validate-set-unknown-key": Case(["validate", good, "--set", "train.nokey=3"], ["trial.train.nokey", "unknown key"]),
        "validate-empty-grid": Case(["validate", _sweep_file(w, "empty_grid", search={"mode": "grid",
                                                                                       "grid": {"objective.beta": []}})],
                                    ["search.grid.objective.beta", "at least one value"]),
        "validate-empty-grid-set": Case(["validate", good, "--set", "search.grid.objective.beta=[]"],
                                        ["search.grid.objective.beta", "at least one value"]),
        # One key in two spellings (nested and dotted) with two values: refused, never one silently dropped.
        "validate-grid-key-twice": Case(["validate", _sweep_file(w, "grid_twice", search={"mode": "grid", "grid": {
            "objective": {"beta": [0.5]}, "objective.beta": [0.01]}})],
            ["search.grid", "objective.beta is given twice", "objective: {beta}", "as objective.beta"]),
        "validate-grid-empty-beside-dotted": Case(["validate", _sweep_file(w, "grid_empty_twice", search={
            "mode": "grid", "grid": {"objective": {"beta": []}, "objective.beta": [0.01]}})],
            ["search.grid", "objective.beta is given twice", "objective: {beta}", "as objective.beta"]),
        "validate-cell-key-twice": Case(["validate", _sweep_file(w, "cell_twice", search={"mode": "grid", "cells": [
            {"loss": {"neural": "box_blur"}, "loss.neural": "none"}]})],
            ["search.cells[0]", "loss.neural is given twice", "loss: {neural}", "as loss.neural"]),
        "validate-trial-key-twice": Case(["validate", _trial_twice(w)],
                                         ["trial:", "objective.beta is given twice", "objective: {beta}"]),
        "validate-set-key-twice": Case(["validate", good, "--set", "objective.beta=0.5", "--set",
                                        "trial.objective.beta=0.2"],
                                       ["--set objective.beta=0.5", "--set trial.objective.beta=0.2"]),
        "validate-bad-mode": Case(["validate", _sweep_file(w, "bad_mode", search={"mode": "gridd"})], ["search.mode"]),
        "validate-zero-workers": Case(["validate", _sweep_file(w, "zero_workers", resources={"workers": 0})],
                                      ["resources.workers"]),
        # validate: what the sweep file points at
        "validate-ftp-tracking": Case(["validate", ftp], ["tracking.uri", "ftp://files.example.com/mlflow"]),
        "validate-dead-tracking": Case(["validate", dead_http], ["tracking.uri", dead, "does not answer"]),
        "validate-missing-root": Case(["validate", missing_root], ["trial.data.root", "nowhere", "does not exist"]),
        "validate-empty-root": Case(["validate", empty_root], ["trial.data.root", "empty_images", "no image files"]),
        "validate-dead-address": Case(["validate", good, "--address", "127.0.0.1:1"],
                                      ["--address 127.0.0.1:1", "no Ray head answers"]),
        "validate-bad-address": Case(["validate", good, "--address", "127.0.0.1:http"], ["--address 127.0.0.1:http"]),
        "validate-missing-cluster-file": Case(["validate", good, "--cluster", str(w / "cluster.yaml")],
                                              ["cluster.yaml", "no such config file"]),
        # sweep: refused before Ray starts, and before the sweep directory or MLflow store exists
        "sweep-dead-address": Case([*sweep_cmd, good, "--address", "127.0.0.1:1"],
                                   ["--address 127.0.0.1:1", "no Ray head answers"], ["storage", "ray_tmp"], ray_tmp),
        "sweep-dead-tracking": Case([*sweep_cmd, dead_http], ["tracking.uri", dead], ["storage", "ray_tmp"], ray_tmp),
        "sweep-ftp-tracking": Case([*sweep_cmd, ftp], ["tracking.uri", "ftp://"], ["storage", "ray_tmp"], ray_tmp),
        "sweep-missing-root": Case([*sweep_cmd, missing_root], ["trial.data.root", "nowhere"], ["storage", "ray_tmp"],
                                   ray_tmp),
        "sweep-missing-file": Case([*sweep_cmd, str(w / "nope.yaml")], ["nope.yaml"], ["storage", "ray_tmp"], ray_tmp),
        # resume
        "resume-missing-dir": Case(["resume", str(w / "x")], [str(w / "x"), "not a raysweep sweep directory"],
                                   ["ray_tmp"], ray_tmp),
        "resume-not-a-sweep": Case(["resume", str(w / "not_a_sweep")], ["not_a_sweep", "not a raysweep sweep directory"],
                                   ["ray_tmp"], ray_tmp),
        "resume-damaged-checkpoint": Case(["resume", str(damaged)],
                                          ["damaged_sweep/t0001/checkpoint_000001/state.pt", "truncated",
                                           "trial t0001 cannot continue"], ["ray_tmp"], ray_tmp),
        # train
        "train-resume-corrupt": Case(["train", str(w / "trial.yaml"), "--out", str(all_corrupt), "--resume"],
                                     ["all_corrupt/checkpoints/step_000000020", "truncated", "no older checkpoint is intact"]),
        "train-resume-nothing": Case(["train", str(w / "trial.yaml"), "--out", str(w / "no_db"), "--resume"],
                                     ["--resume", "no checkpoint"]),
        "train-zero-workers": Case(["train", str(w / "trial.yaml"), "--out", str(w / "out0"), "--workers", "0"],
                                   ["--workers 0"], ["out0"]),
        "train-missing-file": Case(["train", str(w / "nope.yaml"), "--out", str(w / "out1")], ["nope.yaml"], ["out1"]),
        "train-no-out": Case(["train", str(w / "trial.yaml")], ["--out"]),
        # report, claims, ui
        "report-no-store": Case(["report", "--experiment", "x", "--storage", str(w / "no_db"), "--out", str(w / "rep")],
                                ["--storage", "no mlflow.db"], ["rep", "no_db/mlflow.db"]),
        "report-ftp-tracking": Case(["report", "--experiment", "x", "--tracking-uri", "ftp://h/x", "--out",
                                     str(w / "rep2")], ["ftp://h/x"], ["rep2"]),
        "claims-dead-tracking": Case(["claims", "--experiment", "x", "--tracking-uri", dead],
                                     ["--tracking-uri", dead, "does not answer"]),
        "claims-bad-tolerance": Case(["claims", "--experiment", "x", "--storage", str(w / "store"), "--tolerance", "2"],
                                     ["--tolerance 2"]),
        "ui-port-zero": Case(["ui", "--storage", str(w / "store"), "--port", "0"], ["--port 0"]),
        "ui-port-too-large": Case(["ui", "--storage", str(w / "store"), "--port", "70000"], ["--port 70000"]),
        "ui-port-not-a-number": Case(["ui", "--storage", str(w / "store"), "--port", "http"], ["--port", "'http'"]),
        "ui-port-in-use": Case(["ui", "--storage", str(w / "store"), "--port", str(busy_port)], [f"--port {busy_port}"]),
        "ui-missing-sqlite": Case(["ui", "--tracking-uri", f"sqlite:///{w}/none.db"], ["none.db", "no such SQLite file"]),
        # toy, weights, the command line itself
        "toy-negative-dim": Case(["toy", "--dim", "-1"], ["--dim"]),
        "toy-negative-rate": Case(["toy", "--target-rate", "-3"], ["--target-rate"]),
        "weights-download-no-dir": Case(["weights", "--download"], ["--download", "--weights-dir"]),
        "unknown-command": Case(["bogus"], ["'bogus'", "invalid choice"]),
    }, busy_port


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Case, subprocess.CompletedProcess, Path]]:
    """Every case run once, `PARALLEL` at a time; a busy port is held open for ``ui-port-in-use``."""
    w = tmp_path_factory.mktemp("bad_input")
    cases, busy_port = build_cases(w)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    seconds: dict[str, float] = {}

    def run(item: tuple[str, Case]) -> subprocess.CompletedProcess:
        key, case = item
        start = time.monotonic()
        proc = subprocess.run([str(RAYSWEEP), *case.argv], capture_output=True, text=True, timeout=CASE_TIMEOUT_S,
                              env={**env, **case.env}, cwd=w, stdin=subprocess.DEVNULL)
        seconds[key] = time.monotonic() - start
        return proc

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", busy_port))
        busy.listen()
        with ThreadPoolExecutor(PARALLEL) as pool:
            done = dict(zip(cases, pool.map(run, cases.items()), strict=True))
    # Seen with `pytest -s`: which commands cost the module its time.
    print("\n" + "\n".join(f"{seconds[key]:6.1f} s  {key}" for key in sorted(seconds, key=seconds.get, reverse=True)))
    return {key: (cases[key], done[key], w) for key in cases}


CASE_IDS = [
    "validate-missing-file", "validate-not-yaml", "validate-trial-file", "validate-unknown-key", "validate-wrong-type",
    "validate-negative-size", "validate-negative-set", "validate-bad-set-syntax", "validate-set-unknown-key",
    "validate-empty-grid", "validate-empty-grid-set", "validate-grid-key-twice", "validate-grid-empty-beside-dotted",
    "validate-cell-key-twice", "validate-trial-key-twice", "validate-set-key-twice", "validate-bad-mode", "validate-zero-workers",
    "validate-ftp-tracking", "validate-dead-tracking", "validate-missing-root", "validate-empty-root",
    "validate-dead-address", "validate-bad-address", "validate-missing-cluster-file",
    "sweep-dead-address", "sweep-dead-tracking", "sweep-ftp-tracking", "sweep-missing-root", "sweep-missing-file",
    "resume-missing-dir", "resume-not-a-sweep", "resume-damaged-checkpoint",
    "train-resume-corrupt", "train-resume-nothing", "train-zero-workers", "train-missing-file", "train-no-out",
    "report-no-store", "report-ftp-tracking", "claims-dead-tracking", "claims-bad-tolerance",
    "ui-port-zero", "ui-port-too-large", "ui-port-not-a-number", "ui-port-in-use", "ui-missing-sqlite",
    "toy-negative-dim", "toy-negative-rate", "weights-download-no-dir", "unknown-command",
]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_bad_input_is_one_line_exit_2(results: dict, case_id: str) -> None:
    case, proc, w = results[case_id]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("raysweep: error: ")
    for word in case.named:
        assert word in lines[0], f"{word!r} not named in: {lines[0]}"
    for path in case.not_created:
        assert not (w / path).exists(), f"{path} was created"


def test_every_case_is_checked(results: dict) -> None:
    """The table of cases and the list the test runs over are the same (no case silently skipped)."""
    assert sorted(results) == sorted(CASE_IDS)
    assert len(CASE_IDS) >= 25


def test_resume_check_reads_only_the_trials_tune_will_restore(tmp_path: Path) -> None:
    """A damaged newest checkpoint of a trial whose loop finished does not stop a resume (Tune does
    not restore that trial); the same damage in an unfinished trial does, naming the file."""
    from raysweep.errors import RaysweepError
    from raysweep.tune.check import check_trial_checkpoints

    for trial, status in (("done", "finished"), ("open", None)):
        ckpt = tmp_path / trial / "checkpoint_000002"
        ckpt.mkdir(parents=True)
        (ckpt / "state.pt").write_bytes(b"PK\x03\x04" + bytes(200))
        if status:
            (tmp_path / trial / "train").mkdir()
            (tmp_path / trial / "train" / "final.json").write_text(f'{{"status": "{status}"}}')
    with pytest.raises(RaysweepError, match=r"open/checkpoint_000002/state\.pt: .*truncated.*trial open cannot continue"):
        check_trial_checkpoints(str(tmp_path))
    (tmp_path / "open" / "train").mkdir()
    (tmp_path / "open" / "train" / "final.json").write_text('{"status": "finished"}')
    check_trial_checkpoints(str(tmp_path))  # both finished: nothing to restore, nothing read


@pytest.mark.slow
def test_train_resume_skips_a_damaged_checkpoint(tmp_path: Path) -> None:
    """A truncated newest checkpoint: ``train --resume`` says so in one line, resumes from the one
    before, and finishes (exit 0)."""
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(tiny_trial_tree()))
    run = _train_run(tmp_path, tmp_path / "trial.yaml")
    _truncate(run / "checkpoints" / "step_000000020" / "state.pt")
    proc = subprocess.run([str(RAYSWEEP), "train", str(tmp_path / "trial.yaml"), "--out", str(run), "--resume",
                           "--no-progress"], capture_output=True, text=True, timeout=CASE_TIMEOUT_S,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if "skipping damaged checkpoint" in line]
    assert len(skipped) == 1 and "step_000000020" in skipped[0] and "resuming from step_000000010" in skipped[0]
    # The step-20 checkpoint was written again, intact.
    from raysweep.train.checkpoint import checkpoint_problem

    assert checkpoint_problem(run / "checkpoints" / "step_000000020") is None
