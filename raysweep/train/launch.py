"""`raysweep train --workers N`: N local DDP processes without Ray.

Each process joins a torch.distributed group over TCP on 127.0.0.1 (gloo on CPU, NCCL when every
rank has its own GPU) and runs the same training loop; rank 0 writes the outputs. However the
launcher ends (the ranks finish, one fails, Ctrl-C, SIGTERM) no rank is left running.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raysweep.config import TrialConfig
from raysweep.errors import RaysweepError

#: Seconds the ranks get to exit after SIGTERM before they are killed.
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def choose_backend(cfg: TrialConfig, workers: int) -> str:
    """NCCL when the run uses CUDA and there is a GPU per worker, else gloo."""
    wants_cuda = cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        if torch.cuda.device_count() < workers:
            raise RaysweepError(
                f"--workers {workers} needs {workers} GPUs but {torch.cuda.device_count()} are visible: "
                "lower --workers or set train.device=cpu"
            )
        return "nccl"
    return "gloo"


def _worker(
    local_rank: int, workers: int, port: int, backend: str, cfg_dict: dict, out_dir: str, resume_from: str | None,
    progress: bool | None,
) -> None:
    from raysweep.config import trial_config_from_dict
    from raysweep.train.loop import train

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank), WORLD_SIZE=str(workers),
        LOCAL_RANK=str(local_rank),
    )
    # One intra-op thread per rank: ranks already share the machine's cores.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=local_rank, world_size=workers)
    try:
        train(trial_config_from_dict(cfg_dict), out_dir, resume_from=resume_from, progress=progress)
        dist.barrier()  # nobody destroys the group while a peer still uses it
    finally:
        dist.destroy_process_group()


def launch_local_ddp(
    cfg: TrialConfig, out_dir: Path, workers: int, resume_from: Path | None = None, progress: bool | None = None
) -> None:
    """Run the training loop in `workers` local processes and wait for them (outputs in `out_dir`)."""
    if workers < 1:
        raise RaysweepError(f"--workers {workers}: give at least 1")
    backend = choose_backend(cfg, workers)
    context = mp.start_processes(
        _worker,
        args=(workers, free_port(), backend, cfg.to_dict(), str(out_dir),
              None if resume_from is None else str(resume_from), progress),
        nprocs=workers,
        join=False,
        start_method="spawn",
    )
    try:
        while not context.join():
            pass
    except mp.ProcessRaisedException as err:
        # A user error inside a rank (missing data, bad size) reaches the CLI as the same one-liner.
        marker = "raysweep.errors.RaysweepError: "
        lines = [line for line in str(err).splitlines() if line.startswith(marker)]
        if lines:
            raise RaysweepError(lines[-1][len(marker):]) from None
        raise
    finally:
        # Ctrl-C, SIGTERM (a SystemExit from the CLI) or a failed rank: no rank outlives the launcher
        # (multiprocessing's exit handler would wait for the non-daemonic ranks to finish training).
        stop_processes(context.processes)


def stop_processes(processes: list[mp.Process], timeout: float = STOP_TIMEOUT_S) -> None:
    """Terminate the processes still alive (SIGTERM), then kill what is left after `timeout` seconds."""
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in alive:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in alive:
        if process.is_alive():
            process.kill()
            process.join(timeout)
