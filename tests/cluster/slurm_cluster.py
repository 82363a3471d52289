"""A real single-node SLURM for the tests: ``munged``, ``slurmctld`` and ``slurmd`` from the
system's packages (Debian: ``slurmctld slurmd munge slurm-client``), started as root on free
ports with a generated ``slurm.conf`` in a folder of their own, stopped by process id.

``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none`` need no cgroups, so the
daemons start in a container in seconds. The node has this machine's CPUs and no GPUs: the
sbatch script must work with 0 GPUs. Client commands find the controller through ``SLURM_CONF``
(:attr:`SlurmCluster.env`), so nothing in ``/etc/slurm`` is read or written.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "scancel")
START_TIMEOUT_S = 60


def missing_reason() -> str | None:
    """Why a real SLURM cannot be started here (None when it can): one line for the skip."""
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing or os.geteuid() != 0:
        what = f"{', '.join(missing)} not installed" if missing else "not running as root"
        return (f"real SLURM tests need root and slurmctld/slurmd/munge ({what}): run them through .ci/run, which "
                "installs them with apt-get as root")
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SlurmCluster:
    """A running single-node SLURM: its folder, the client environment and the daemons' pids."""

    root: Path
    node: str
    cpus: int
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command (``sbatch``, ``scontrol``...) against this controller."""
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=60, check=check)

    def sbatch(self, script: Path, *options: str, env: dict[str, str], cwd: Path) -> str:
        """Submit `script` with `options` and `env` (exported to the job); returns the job id."""
        done = subprocess.run(["sbatch", "--parsable", *options, str(script)], env={**self.env, **env}, cwd=cwd,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a mapping (JobState, Restarts, ...); {} once the controller forgot it."""
        done = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        if done.returncode != 0:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", done.stdout))

    def logs(self) -> str:
        """The daemons' logs (tails), for failure messages."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / "log" / name
            if path.is_file():
                parts.append(f"--- {name}\n" + path.read_text()[-2000:])
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, then stop the daemons by pid (SIGTERM, SIGKILL after 30 s)."""
        self.run("scancel", "--full", "--user", "root", check=False)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_slurm(root: Path) -> SlurmCluster:
    """Start munged, slurmctld and slurmd with their state, sockets and logs under `root` (a short
    path: the munge socket must fit in a Unix socket name) and wait until the node is idle."""
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket_path = root / "munge" / "munge.sock"
    node = socket.gethostname().split(".")[0]
    cpus = len(os.sched_getaffinity(0))
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=raysweeptest",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        f"AuthInfo=socket={socket_path}",
        "CredType=cred/munge",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        "ReturnToService=2",
        "JobRequeue=1",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "KillWait=30",
        "MinJobAge=3600",  # the finished jobs stay visible to `scontrol show job` for the checks
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
        f"PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = SlurmCluster(root=root, node=node, cpus=cpus, env=env)
    log = root / "log"
    try:
        cluster.procs.append(subprocess.Popen(
            ["munged", "--foreground", f"--socket={socket_path}", f"--key-file={key}",
             f"--pid-file={root / 'munge' / 'munged.pid'}", f"--log-file={log / 'munged.log'}",
             f"--seed-file={root / 'munge' / 'seed'}", "--force"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True))
        _wait(lambda: socket_path.exists(), "munged's socket", cluster)
        for daemon in ("slurmctld", "slurmd"):
            with (log / f"{daemon}.out").open("w") as out:
                cluster.procs.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env, stdout=out,
                                                      stderr=subprocess.STDOUT, start_new_session=True))
        _wait(lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout, "an idle node", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(condition, what: str, cluster: SlurmCluster) -> None:  # noqa: ANN001
    deadline = time.monotonic() + START_TIMEOUT_S
    while not condition():
        for proc in cluster.procs:
            assert proc.poll() is None, f"{proc.args[0]} exited with {proc.returncode} before {what}\n{cluster.logs()}"
        assert time.monotonic() < deadline, f"no {what} within {START_TIMEOUT_S} s\n{cluster.logs()}"
        time.sleep(0.3)
