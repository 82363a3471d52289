"""Sweeps on a three-node Ray cluster (head + two worker nodes, ``ray.cluster_utils.Cluster``) with
the sweep storage on a real S3 server (moto) and MLflow on SQLite in the test's folder.

1. Trials placed on the worker nodes (``resources.custom``) keep every output in the bucket, and
   MLflow gets every metric and artifact: the driver reads nothing from the nodes' disks.
2. A worker node killed mid-sweep (its processes SIGKILLed): its trial is retried on the other
   node from its newest checkpoint; one MLflow child per trial, every validation logged once.
3. ASHA over 2-worker DDP trials: every trial ends and no placement group is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import NODE_RESOURCE, RayCluster, S3Server, stop_process
from tune_helpers import tiny_sweep, write_sweep

from raysweep.cli import main
from raysweep.names import TRIAL_ARTIFACTS
from raysweep.storage import driver_outputs_dir

pytestmark = pytest.mark.slow
RAYSWEEP = str(Path(sys.executable).with_name("raysweep"))
PLACED = {"cpus_per_worker": 2, "custom": {NODE_RESOURCE: 1}}  # one trial per worker node, never the head


def _mlflow(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _children(client: Any, experiment: str) -> tuple[list[Any], list[Any]]:
    """(parent runs, child runs) of an experiment."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("raysweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("raysweep.role") == "trial"]
    return parents, children


def _steps(client: Any, run_id: str, metric: str = "psnr") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, metric))


def _artifacts(client: Any, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id)}


def _trial_ids(s3: S3Server, bucket: str, prefix: str) -> set[str]:
    return {key[len(prefix):].split("/")[0] for key in s3.keys(bucket, prefix) if "/train/" in key}


def test_trials_on_worker_nodes_keep_outputs_in_the_bucket_and_mlflow(
    ray_cluster: RayCluster, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root (./mlruns) lands in the test folder
    bucket = s3_server.create_bucket("raysweep-nodes")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = tiny_sweep("on-nodes", search={"grid": {"objective.beta": [0.5, 1.0, 2.0, 4.0]}},
                     resources=PLACED, tracking={"uri": uri})
    path = write_sweep(tmp_path, raw)
    assert main(["sweep", str(path), "--storage", f"s3://{bucket}/sweeps", "--address", ray_cluster.address]) == 0

    prefix = "sweeps/on-nodes/"
    keys = s3_server.keys(bucket, prefix)
    trials = _trial_ids(s3_server, bucket, prefix)
    assert len(trials) == 4, keys
    assert f"{prefix}sweep.yaml" in keys
    for trial in trials:
        mine = [key for key in keys if key.startswith(f"{prefix}{trial}/")]
        for name in TRIAL_ARTIFACTS:
            assert f"{prefix}{trial}/train/{name}" in mine, f"{name} of trial {trial} is not in the bucket"
        assert len({key.split("/")[3] for key in mine if "/checkpoint_" in key}) == 2  # num_to_keep
        final = json.loads(s3_server.read(bucket, f"{prefix}{trial}/train/final.json"))
        assert final["status"] == "finished" and final["step"] == 20
        log = s3_server.read(bucket, f"{prefix}{trial}/train/metrics.jsonl").decode().splitlines()
        assert [json.loads(line)["step"] for line in log] == [10, 20]

    client = _mlflow(uri)
    parents, children = _children(client, "on-nodes")
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.tags["raysweep.trial_id"] for c in children} == trials
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["raysweep.status"] == "finished"
        assert _steps(client, child.info.run_id) == [10, 20]
        assert set(TRIAL_ARTIFACTS) <= _artifacts(client, child.info.run_id)
        assert child.data.params["objective.beta"] in {"0.5", "1.0", "2.0", "4.0"}

    # The report renders from MLflow alone: no trial output is left on this machine.
    for trial in trials:
        for folder in (driver_outputs_dir("on-nodes", trial),):
            for file in folder.glob("*"):
                file.unlink()
    assert main(["report", "--experiment", "on-nodes", "--tracking-uri", uri, "--out", str(tmp_path / "report"),
                 "--no-log"]) == 0
    html = (tmp_path / "report" / "index.html").read_text()
    assert "on-nodes" in html and list((tmp_path / "report").rglob("*.png"))


def _checkpointed_and_running(s3: S3Server, bucket: str, prefix: str) -> set[str]:
    """Trials with at least one checkpoint in the bucket and no final.json yet."""
    keys = s3.keys(bucket, prefix)
    with_checkpoint = {key[len(prefix):].split("/")[0] for key in keys if "/checkpoint_" in key}
    finished = {key[len(prefix):].split("/")[0] for key in keys if key.endswith("/train/final.json")}
    return with_checkpoint - finished


def test_a_worker_node_lost_mid_sweep_retries_its_trial_from_its_checkpoint(
    ray_cluster: RayCluster, s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.create_bucket("raysweep-lost-node")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = tiny_sweep("lost-node", search={"grid": {"objective.beta": [0.5, 2.0]}}, resources=PLACED,
                     tracking={"uri": uri}, failure={"max_failures": 2})
    raw["trial"]["train"].update(max_steps=200, val_every=20)
    path = write_sweep(tmp_path, raw)
    prefix = "sweeps/lost-node/"
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        # The driver in its own process (the test's process stays out of Ray), in the test folder
        # (MLflow's ./mlruns); it inherits the S3 variables.
        driver = subprocess.Popen(
            [RAYSWEEP, "sweep", str(path), "--storage", f"s3://{bucket}/sweeps", "--address", ray_cluster.address],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path,
        )
    try:
        # Each worker node runs one of the two trials: once both have a checkpoint and neither
        # has finished, killing a node kills exactly one trial mid-run.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and driver.poll() is None:
            if len(_checkpointed_and_running(s3_server, bucket, prefix)) == 2:
                break
            time.sleep(0.3)
        assert driver.poll() is None and len(_checkpointed_and_running(s3_server, bucket, prefix)) == 2, \
            log.read_text()[-3000:]
        lost = ray_cluster.workers.pop(0)
        ray_cluster.cluster.remove_node(lost, allow_graceful=False)  # SIGKILL: raylet, workers, store
        driver.wait(timeout=300)
    finally:
        stop_process(driver)
        ray_cluster.add_worker()  # the next tests have two worker nodes again
    assert driver.returncode == 0, log.read_text()[-3000:]

    client = _mlflow(uri)
    parents, children = _children(client, "lost-node")
    assert len(parents) == 1 and len(children) == 2, [c.data.tags for c in children]
    retried = [c for c in children if c.data.tags.get("raysweep.failures")]
    assert len(retried) == 1, [c.data.tags for c in children]
    every_step = list(range(20, 201, 20))
    for child in children:
        assert child.data.tags["raysweep.status"] == "finished"
        for metric in ("psnr", "rate", "step"):
            assert _steps(client, child.info.run_id, metric) == every_step, (metric, child.data.tags)
        trial = child.data.tags["raysweep.trial_id"]
        lines = s3_server.read(bucket, f"{prefix}{trial}/train/metrics.jsonl").decode().splitlines()
        assert [json.loads(line)["step"] for line in lines] == every_step
    # The retried trial continued from a checkpoint (its last attempt did not train from step 0);
    # the other trial trained in one go. (Tune's own result.json in the bucket is synced by the
    # driver on Ray's schedule and may lag, so the loop's final.json is what is checked.)
    for child in children:
        trial = child.data.tags["raysweep.trial_id"]
        final = json.loads(s3_server.read(bucket, f"{prefix}{trial}/train/final.json"))
        if child in retried:
            assert 0 < final["resumed_from_step"] < 200 and final["resumed_from_step"] % 20 == 0, final
        else:
            assert final["resumed_from_step"] == 0, final


@pytest.mark.timeout(600)
def test_asha_over_ddp_trials_ends_every_trial_and_leaves_no_placement_group(
    ray_cluster: RayCluster, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # Two strong learning rates first, so the two weak ones meet recorded rungs and are stopped (four
    # DDP trials: each costs about 25 s on 2 cores, and two of each kind show both endings).
    raw = tiny_sweep("asha-ddp", search={
        "cells": [{"train.lr": lr} for lr in (5e-3, 3e-3, 1e-7, 1e-8)],
        "scheduler": {"type": "asha", "metric": "psnr", "mode": "max", "grace_period": 1, "reduction_factor": 2},
    }, resources={"workers": 2, "cpus_per_worker": 1, "custom": {NODE_RESOURCE: 1}}, tracking={"uri": uri})
    raw["trial"]["train"].update(max_steps=40, val_every=10)
    path = write_sweep(tmp_path, raw)
    started = time.monotonic()
    assert main(["sweep", str(path), "--storage", str(tmp_path / "runs"), "--address", ray_cluster.address]) == 0
    print(f"ASHA over 4 DDP trials: {time.monotonic() - started:.0f} s")

    client = _mlflow(uri)
    _, children = _children(client, "asha-ddp")
    statuses = sorted(c.data.tags["raysweep.status"] for c in children)
    assert len(children) == 4 and "running" not in statuses and "retrying" not in statuses, statuses
    assert "early_stopped" in statuses and "finished" in statuses, statuses
    assert ray.is_initialized()
    deadline = time.monotonic() + 30
    while True:  # removal of the last trial's group is asynchronous: give it a moment
        table = ray.util.placement_group_table()
        left = {pg_id: pg["state"] for pg_id, pg in table.items() if pg["state"] != "REMOVED"}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert table and not left, f"placement groups left behind: {left}"
    assert os.environ.get("AWS_ENDPOINT_URL")  # the session's S3 variables did not leak away
