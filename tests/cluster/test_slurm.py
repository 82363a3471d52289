"""``cluster/slurm/raysweep.sbatch`` on a real SLURM (issue 25): a reduced quickstart to completion,
and a sweep stopped by the pre-limit signal, requeued by the script and resumed by the same script.

The SLURM is :mod:`slurm_cluster`'s (munged, slurmctld, slurmd started here as root; the test
skips with one message where they are not installed or not root). The script runs as users run
it: ``sbatch`` from the repository, its settings in the exported environment, Ray started by the
script on the allocation's node with the allocation's CPUs and no GPUs, an MLflow server on the
"head", storage in a folder standing for the shared filesystem.

The signal is the one ``#SBATCH --signal=B:USR1@300`` makes SLURM send before the wall-time limit,
sent at a chosen moment (``scancel --signal=USR1 --batch``, to the batch shell only, as SLURM does):
waiting for a real limit would cost minutes and land anywhere in the sweep. After the script
requeues the job, SLURM holds it for a fixed 121 s before it may start again; the test lifts that
delay (``scontrol update StartTime=now``, as root), which changes nothing of what the job runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from slurm_cluster import SlurmCluster, missing_reason, start_slurm
from tiny_trial import tiny_trial_tree

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "cluster" / "slurm" / "raysweep.sbatch"
JOB_TIMEOUT_S = 420  # a job from submission to its end, on a loaded 2-core machine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _job_env(storage: Path, sweep: str, extra_sets: str = "") -> dict[str, str]:
    """The environment `sbatch` exports to the job: the script's settings, this checkout's code,
    free ports (another Ray may run on this machine), and the head's local folders of this test
    (job ids restart at 1 with every test SLURM, so the defaults /tmp/ray-<job id> and
    /tmp/raysweep-mlflow-<job id> could hold an earlier session's files; the Ray folder's path is
    kept short for Ray's socket names)."""
    venv = Path(sys.executable).parent.parent
    ports = [_free_port() for _ in range(3)]
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")
    return {
        "RAYSWEEP_RAY_TMPDIR": ray_tmp,
        "RAYSWEEP_MLFLOW_DIR": str(storage.parent / "head-local-disk"),
        "RAYSWEEP_SWEEP": sweep,
        "RAYSWEEP_STORAGE": str(storage),
        "RAYSWEEP_SET": extra_sets,
        "RAYSWEEP_VENV": str(venv),
        "RAYSWEEP_RAY_PORT": str(ports[0]),
        "RAYSWEEP_MLFLOW_PORT": str(ports[1]),
        "RAYSWEEP_RAY_DASHBOARD": "0",
        "RAYSWEEP_RAY_START_ARGS": f"--dashboard-agent-listen-port={ports[2]} --ray-client-server-port={_free_port()}",
        "RAYSWEEP_STOP_GRACE_S": "60",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }


def _sbatch(slurm: SlurmCluster, tmp_path: Path, env: dict[str, str]) -> tuple[str, Path]:
    """Submit the script as a user would (its #SBATCH lines, with the node count, CPUs and GPUs of
    this one-node test cluster given on the command line); returns (job id, its output file)."""
    out = tmp_path / "job.out"
    job_id = slurm.sbatch(SCRIPT, "--nodes=1", f"--cpus-per-task={slurm.cpus}", "--gpus-per-node=0", "--mem=0",
                          "--time=20", f"--output={out}", env=env, cwd=REPO)
    return job_id, out


def _wait(condition: Callable[[], bool], what: str, slurm: SlurmCluster, job_id: str, out: Path,
          timeout: float = JOB_TIMEOUT_S) -> float:
    deadline = time.monotonic() + timeout
    while not condition():
        state = slurm.job(job_id).get("JobState", "?")
        assert state not in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"), \
            f"job {job_id} {state} before {what}\n{_text(out)[-4000:]}\n{slurm.logs()}"
        assert time.monotonic() < deadline, f"not {what} within {timeout} s (job {state})\n{_text(out)[-4000:]}"
        time.sleep(1)
    return time.time()


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def _trial_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.glob("*/params.json"))


def _final(trial_dir: Path) -> dict:
    path = trial_dir / "train" / "final.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _mlflow_trial_runs(storage: Path, experiment: str) -> list:
    """The sweep's child runs in the MLflow server's database (copied to the shared storage when
    the job ended)."""
    from raysweep.tracking.store import ROLE_TAG, TRIAL_ID_TAG, make_client, search_all

    db = storage / ".mlflow-server" / "mlflow.db"
    assert db.is_file(), f"no MLflow database copied to {db}"
    client = make_client(f"sqlite:///{db}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment} in {db}"
    runs = search_all(client, [found.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")
    return [(r.data.tags[TRIAL_ID_TAG], r.info.status) for r in runs]


def _no_ray_left(env: dict[str, str]) -> list[str]:
    """Processes of this job's Ray still running (by its temp dir)."""
    left = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if env["RAYSWEEP_RAY_TMPDIR"] in cmdline:
            left.append(f"{process.pid} {cmdline[:160]}")
    return left


def test_reduced_quickstart_runs_to_completion_through_sbatch(slurm: SlurmCluster, tmp_path: Path) -> None:
    """search_spaces/quickstart.yaml reduced to 3 trials of 40 steps (one beta, one seed) by
    RAYSWEEP_SET: the job completes, each trial once in the storage and once in MLflow (through the
    server the script ran on the head), and no Ray process of the job is left."""
    storage = tmp_path / "shared"
    sets = "search.seeds=[0] search.grid.objective.beta=[0.01] trial.train.max_steps=40 trial.train.val_every=20"
    env = _job_env(storage, "search_spaces/quickstart.yaml", sets)
    job_id, out = _sbatch(slurm, tmp_path, env)
    _wait(lambda: slurm.job(job_id).get("JobState") == "COMPLETED", "COMPLETED", slurm, job_id, out)
    log = _text(out)
    assert "starting search_spaces/quickstart.yaml" in log and "driver exited with status 0" in log, log[-3000:]
    assert f"1 nodes (head {slurm.node}" in log and f"per node {slurm.cpus} CPUs, 0 GPUs" in log, log[-3000:]

    trials = _trial_dirs(storage / "quickstart")
    assert len(trials) == 3, trials
    assert all(_final(t).get("status") == "finished" for t in trials), [_final(t) for t in trials]
    runs = _mlflow_trial_runs(storage, "quickstart")
    assert sorted(trial_id for trial_id, _ in runs) == sorted(t.name for t in trials), runs
    assert all(status == "FINISHED" for _, status in runs), runs
    assert not _no_ray_left(env)


def test_requeued_sweep_resumes_and_runs_each_trial_once(slurm: SlurmCluster, tmp_path: Path) -> None:
    """Two trials on two CPUs: a short one that finishes and a long one. The pre-limit signal comes
    once the short one has finished and the long one has checkpointed: the driver stops, the
    script requeues the job, the same script resumes the sweep. At the end: each trial once in the
    storage and once in MLflow, the short one untouched by the resumed job, the long one continued
    from its checkpoint (``resumed_from_step`` > 0)."""
    storage = tmp_path / "shared"
    trial = tiny_trial_tree(**{"train.val_every": 25})
    sweep = {"name": "requeue", "trial": trial, "search": {"mode": "grid", "grid": {"train.max_steps": [25, 1500]}},
             "checkpoint": {"num_to_keep": 2}}
    sweep_file = tmp_path / "requeue.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep, sort_keys=False))
    timeline: dict[str, float] = {"submit": time.time()}
    env = _job_env(storage, str(sweep_file))
    job_id, out = _sbatch(slurm, tmp_path, env)
    sweep_dir = storage / "requeue"

    def by_length() -> dict[int, Path]:
        return {json.loads((t / "params.json").read_text())["train.max_steps"]: t for t in _trial_dirs(sweep_dir)}

    def ready() -> bool:
        trials = by_length()
        return (len(trials) == 2 and _final(trials[25]).get("status") == "finished"
                and any(trials[1500].glob("checkpoint_*/")))

    _wait(ready, "the short trial finished and the long one checkpointed", slurm, job_id, out)
    short, long_ = by_length()[25], by_length()[1500]
    assert not _final(long_), "the long trial finished before the signal: nothing to resume"
    short_files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (short / "train").iterdir() if p.is_file()}
    slurm.run("scancel", "--signal=USR1", "--batch", job_id)  # what --signal=B:USR1@300 sends before the limit
    timeline["signal"] = time.time()
    timeline["requeued"] = _wait(lambda: slurm.job(job_id).get("JobState") == "PENDING", "requeued", slurm, job_id, out)
    slurm.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")  # lift SLURM's fixed 121 s requeue delay
    timeline["finished"] = _wait(lambda: slurm.job(job_id).get("JobState") == "COMPLETED", "COMPLETED after the requeue",
                                 slurm, job_id, out)
    log = _text(out)
    assert slurm.job(job_id).get("Restarts") == "1", slurm.job(job_id)
    for needle in ("SIGUSR1: asking the driver to stop", "stopping 1 running trials at their next checkpoint",
                   "driver exited with status 143", f"requeueing job {job_id}", f"resuming {sweep_dir}",
                   "driver exited with status 0"):
        assert needle in log, f"{needle!r} not in the job's output:\n{log[-5000:]}"

    # Each trial once in the storage and in MLflow; nothing rerun after it had finished.
    assert _trial_dirs(sweep_dir) == sorted([short, long_])
    assert _final(short)["status"] == "finished" and _final(long_)["status"] == "finished"
    assert _final(short)["resumed_from_step"] == 0
    assert _final(long_)["resumed_from_step"] > 0, _final(long_)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (short / "train").iterdir() if p.is_file()} == short_files
    runs = _mlflow_trial_runs(storage, "requeue")
    assert sorted(trial_id for trial_id, _ in runs) == sorted([short.name, long_.name]), runs
    assert all(status == "FINISHED" for _, status in runs), runs
    assert not _no_ray_left(env)

    # The timeline, from the job's own log lines (signal, stop, requeue, resume, finish).
    stamps = {}
    for key, needle in (("stop", "driver exited with status 143"), ("requeue", "requeueing job"),
                        ("resume", "resuming"), ("finish", "driver exited with status 0")):
        match = re.search(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] " + re.escape(needle), log)
        stamps[key] = match.group(1) if match else "?"
    print(f"\nrequeue timeline: submitted {time.strftime('%T', time.localtime(timeline['submit']))}, "
          f"signal {time.strftime('%T', time.localtime(timeline['signal']))}, driver stopped {stamps['stop']}, "
          f"requeue {stamps['requeue']}, seen pending {time.strftime('%T', time.localtime(timeline['requeued']))}, "
          f"resumed {stamps['resume']}, finished {stamps['finish']}; long trial resumed from step "
          f"{_final(long_)['resumed_from_step']}")
