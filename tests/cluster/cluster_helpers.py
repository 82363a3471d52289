"""Helpers of the cluster tests (imported by their conftest and modules): free ports, an S3 server
(moto) and a Ray ``Cluster`` handle, and stopping processes by id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NODE_RESOURCE = "sweep_node"  # the custom resource of the worker nodes
WORKER_NODE_CPUS = 2  # declared per worker node: one 2-CPU trial (or one 2-worker DDP trial) each
S3_ENV = {"AWS_ACCESS_KEY_ID": "raysweep-test", "AWS_SECRET_ACCESS_KEY": "raysweep-test",
          "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, the process group of `proc` (started with ``start_new_session``)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def kill_process_group_leftovers(pgid: int) -> list[int]:
    """SIGKILL every process still in process group `pgid` (children of a killed leader are
    reparented but keep its group); returns their pids."""
    import psutil

    killed = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                proc.kill()
                killed.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    for pid in killed:
        try:
            psutil.Process(pid).wait(timeout=10)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            pass
    return killed


def start_moto(log: Path, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free port of 127.0.0.1; returns (process, endpoint URL) once it answers."""
    port = free_port()
    out = open(log, "w")  # noqa: SIM115 - the child holds it; closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **(extra_env or {})},
    )
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.2)
    stop_process(proc)
    raise TimeoutError(f"moto server on {url} did not answer within 60 s")


@dataclass
class S3Server:
    """A running S3 server: its endpoint and a boto3 client of it."""

    endpoint: str
    client: Any

    def create_bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in `bucket` under `prefix`."""
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def read(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()


@dataclass
class RayCluster:
    """A Ray ``Cluster`` of a head and worker nodes; ``workers`` in the order they were added."""

    cluster: Any
    workers: list[Any] = field(default_factory=list)

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_worker(self) -> Any:
        node = self.cluster.add_node(num_cpus=WORKER_NODE_CPUS, resources={NODE_RESOURCE: 100},
                                     object_store_memory=80 * 1024**2)
        self.workers.append(node)
        return node

    def process_ids(self) -> list[int]:
        """Pids of every process the cluster's nodes started (raylets, GCS, workers' parents)."""
        pids = []
        for node in [self.cluster.head_node, *self.cluster.worker_nodes]:
            for infos in node.all_processes.values():
                pids.extend(info.process.pid for info in infos if info.process is not None)
        return pids
