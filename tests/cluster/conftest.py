"""Fixtures of the cluster tests: a real S3 server (moto) and a real several-node Ray cluster, on
127.0.0.1, on free ports, stopped by process id whatever the outcome.

- :func:`s3_server`: moto's S3 server as a subprocess (``python -m moto.server``); the standard
  variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...) point at it for the whole session and
  are set before any Ray node starts, so every Ray worker inherits them (pyarrow's S3 filesystem,
  which Ray's storage layer and raysweep use, reads them).
- :func:`ray_cluster`: a head (no CPU: it hosts only the drivers of DDP trials, which reserve
  memory only) and two worker nodes with the custom resource :data:`NODE_RESOURCE`, so a sweep
  asking ``resources.custom: {sweep_node: 1}`` runs its trials on the worker nodes only.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "tune", HERE.parent / "tracking"):  # cluster_helpers, tune_helpers...
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from cluster_helpers import S3_ENV, RayCluster, S3Server, free_port, start_moto, stop_process  # noqa: E402


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server for the session, with the AWS variables pointing at it (set before any
    Ray node starts, so trial processes inherit them)."""
    import boto3

    proc, url = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    saved = {key: os.environ.get(key) for key in (*S3_ENV, "AWS_ENDPOINT_URL")}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=url)
    try:
        yield S3Server(url, boto3.client("s3", endpoint_url=url))
    finally:
        stop_process(proc)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def ray_cluster(s3_server: S3Server) -> Iterator[RayCluster]:
    """A head without CPUs and two worker nodes with :data:`NODE_RESOURCE`, on free ports; shut
    down (every node's processes killed by pid) at the end of the module."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, connect=False, shutdown_at_exit=False, head_node_args={
        "num_cpus": 0, "gcs_server_port": free_port(), "include_dashboard": False, "object_store_memory": 80 * 1024**2,
    })
    handle = RayCluster(cluster)
    try:
        handle.add_worker()
        handle.add_worker()
        cluster.wait_for_nodes(timeout=120)
        yield handle
    finally:
        ray.shutdown()
        pids = handle.process_ids()
        try:
            cluster.shutdown()
        finally:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
