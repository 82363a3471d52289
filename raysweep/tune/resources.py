"""The resource plan of a sweep: what each trial reserves and how many trials run at once.

A pure function of the `resources` block and a list of nodes, so it is testable without Ray or
GPUs. The rules:

- One worker: the training loop runs inside the Tune trial process, which reserves
  `cpus_per_worker` CPUs and `gpus_per_worker` GPUs (a fraction packs several trials per GPU).
- Several workers: the Tune trial is a thin driver (it reserves a little memory, no CPU) that
  starts a Ray Train ``TorchTrainer`` whose workers each reserve `cpus_per_worker` CPUs and
  `gpus_per_worker` whole GPUs, packed on one node (STRICT_PACK).
- A fraction of a GPU is allowed only with one worker: NCCL cannot share one GPU between the ranks
  of a job. A trial must fit on one node; GPUs on a CPU-only cluster and an accelerator type no
  node has are rejected.
- ``resources.custom`` (custom Ray node resources, e.g. ``{spot_node: 1}``) is reserved by each
  worker like its CPUs: trials run only on nodes that have those resources, and a resource no node
  has is rejected.
- The maximum concurrency counts, node by node, how many whole trials fit, so concurrent trials
  never wait on each other's placement groups.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysweep.errors import RaysweepError
from raysweep.tune.space import ExpandedSweep
from raysweep.tune.sweep_config import RAY_BUILTIN_RESOURCES, ResourcesConfig

DRIVER_MEMORY_BYTES = 64 * 1024**2  # what a multi-worker trial's driver reserves (it only waits)
ACCELERATOR_PREFIX = "accelerator_type:"
EPS = 1e-9


@dataclass(frozen=True)
class NodeResources:
    """Logical resources of one node type (`count` identical nodes)."""

    cpus: float
    gpus: float = 0.0
    accelerator_types: frozenset[str] = field(default_factory=frozenset)
    name: str = "node"
    count: int = 1
    custom: dict[str, float] = field(default_factory=dict)  # custom resources (``ray start --resources``)


@dataclass(frozen=True)
class ResourcePlan:
    """What one trial reserves and how many trials the cluster runs at once."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    accelerator_type: str | None
    max_concurrent: int
    trials_per_gpu: int | None = None
    custom: dict[str, float] = field(default_factory=dict)  # per worker (resources.custom)

    @property
    def uses_trainer(self) -> bool:
        """True when trials are multi-worker DDP jobs run by a TorchTrainer."""
        return self.workers > 1

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def accelerator_request(self) -> dict[str, float]:
        return {f"{ACCELERATOR_PREFIX}{self.accelerator_type}": 0.001} if self.accelerator_type else {}

    def worker_resources(self) -> dict[str, float]:
        """Resources of one worker (the trial itself when there is one worker)."""
        res = {"CPU": float(self.cpus_per_worker)}
        if self.gpus_per_worker > 0:
            res["GPU"] = float(self.gpus_per_worker)
        res.update((name, float(amount)) for name, amount in self.custom.items())
        return res

    def trial_resources(self) -> dict[str, float]:
        """What ``tune.with_resources`` reserves for the Tune trial process."""
        if self.uses_trainer:
            return {"memory": float(DRIVER_MEMORY_BYTES)}
        return {**self.worker_resources(), **self.accelerator_request()}

    def describe(self) -> list[str]:
        """Human-readable lines for ``raysweep validate``."""
        gpu = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        accel = f" on {self.accelerator_type} nodes" if self.accelerator_type else ""
        if self.custom:
            accel += " reserving " + ", ".join(f"{amount:g} {name}" for name, amount in self.custom.items()) + " each"
        if self.uses_trainer:
            lines = [
                f"per trial: {self.workers} DDP workers (Ray Train TorchTrainer){accel}, each {self.cpus_per_worker:g} CPU{gpu}",
                f"           = {self.workers * self.cpus_per_worker:g} CPU, {self.workers * self.gpus_per_worker:g} GPU on one node",
            ]
        else:
            lines = [f"per trial: 1 worker in the Tune trial process{accel}: {self.cpus_per_worker:g} CPU{gpu}"]
        if self.trials_per_gpu and self.trials_per_gpu > 1:
            lines.append(f"packing: {self.trials_per_gpu} trials per GPU")
        lines.append(f"max concurrency: {self.max_concurrent} trial{'s' if self.max_concurrent != 1 else ''} at once")
        return lines


def _fits(available: float, needed: float) -> int:
    """How many times `needed` fits in `available` (unbounded when nothing is needed)."""
    if needed <= 0:
        return 10**9
    return int(math.floor(available / needed + EPS))


def plan_resources(res: ResourcesConfig, nodes: list[NodeResources]) -> ResourcePlan:
    """The plan for `res` on a cluster made of `nodes`, or a one-line RaysweepError when it cannot
    run there."""
    workers, gpw, cpw = res.workers, res.gpus_per_worker, res.cpus_per_worker
    if gpw > 1:
        raise RaysweepError(
            f"resources.gpus_per_worker {gpw:g}: a worker drives one GPU; for more GPUs per trial raise resources.workers (DDP)"
        )
    if workers > 1 and 0 < gpw < 1:
        raise RaysweepError(
            f"resources.gpus_per_worker {gpw:g} with resources.workers {workers}: a fraction of a GPU is allowed only with "
            "one worker (NCCL cannot share a GPU between the ranks of one job): use gpus_per_worker: 1 or workers: 1"
        )
    if res.accelerator_type and gpw == 0:
        raise RaysweepError(
            f"resources.accelerator_type {res.accelerator_type} needs GPUs: set resources.gpus_per_worker (e.g. 1)"
        )
    if not nodes:
        raise RaysweepError("the cluster has no nodes with resources: check --address or the cluster file")
    if gpw > 0 and sum(n.gpus * n.count for n in nodes) == 0:
        raise RaysweepError(
            f"resources.gpus_per_worker is {gpw:g} but the cluster has no GPU (CPU only): set "
            "resources.gpus_per_worker: 0 to train on CPUs, or use a GPU cluster (sweep --address; validate --cluster FILE)"
        )
    eligible = nodes
    if res.accelerator_type:
        eligible = [n for n in nodes if res.accelerator_type in n.accelerator_types]
        if not eligible:
            present = sorted({t for n in nodes for t in n.accelerator_types}) or ["none"]
            raise RaysweepError(
                f"resources.accelerator_type {res.accelerator_type}: no node of the cluster has it "
                f"(accelerator types present: {', '.join(present)}): fix the type or leave it out"
            )
    for resource in res.custom:
        eligible = [n for n in eligible if n.custom.get(resource, 0.0) > 0]
        if not eligible:
            raise RaysweepError(
                f"resources.custom.{resource}: no node of the cluster has the resource {resource}: start nodes with "
                f"`ray start --resources '{{\"{resource}\": N}}'` and join them with --address, or remove it"
            )
    trial_cpus, trial_gpus = workers * cpw, workers * gpw
    per_node = [min(_fits(n.cpus, trial_cpus), _fits(n.gpus, trial_gpus),
                    *(_fits(n.custom[k], workers * amount) for k, amount in res.custom.items())) for n in eligible]
    if max(per_node) == 0:
        biggest_gpus = max(n.gpus for n in eligible)
        biggest_cpus = max(n.cpus for n in eligible)
        if trial_gpus > biggest_gpus + EPS:
            hint = f"lower resources.workers to at most {int(biggest_gpus // gpw)}" if gpw and biggest_gpus >= gpw else \
                "use nodes with more GPUs"
            raise RaysweepError(
                f"resources: a trial needs {trial_gpus:g} GPUs (workers {workers} x gpus_per_worker {gpw:g}) but the "
                f"largest node has {biggest_gpus:g}: {hint}"
            )
        raise RaysweepError(
            f"resources: a trial needs {trial_cpus:g} CPUs (workers {workers} x cpus_per_worker {cpw:g}) but the largest "
            f"node has {biggest_cpus:g}: lower resources.cpus_per_worker or resources.workers"
        )
    max_concurrent = sum(k * n.count for k, n in zip(per_node, eligible, strict=True))
    trials_per_gpu = _fits(1.0, gpw) if 0 < gpw < 1 else None
    return ResourcePlan(workers=workers, cpus_per_worker=cpw, gpus_per_worker=gpw,
                        accelerator_type=res.accelerator_type, max_concurrent=max_concurrent,
                        trials_per_gpu=trials_per_gpu, custom=dict(res.custom))


def check_trials_fit(expanded: ExpandedSweep, res: ResourcesConfig) -> None:
    """Per-trial consistency with the resources: the global batch splits evenly over the workers,
    and ``train.device`` agrees with the GPUs reserved."""
    batch_dist = expanded.distributions.get("train.batch_size")
    for cell in expanded.cells:
        sizes = [(cell.flat["train.batch_size"], cell.sources.get("train.batch_size", "trial.train.batch_size"))]
        if batch_dist is not None and batch_dist.choice is not None:
            sizes = [(v, "search.distributions.train.batch_size.choice") for v in batch_dist.choice]
        for size, where in sizes:
            if int(size) % res.workers:
                raise RaysweepError(
                    f"{where}: {size} is not divisible by resources.workers {res.workers} "
                    "(the global batch is split evenly over the DDP workers)"
                )
        device = cell.flat["train.device"]
        where = cell.sources.get("train.device", "trial.train.device")
        if device == "cuda" and res.gpus_per_worker == 0:
            raise RaysweepError(f"{where}: train.device is cuda but resources.gpus_per_worker is 0: reserve GPUs or use auto")
        if device == "cpu" and res.gpus_per_worker > 0:
            raise RaysweepError(
                f"{where}: train.device is cpu but resources.gpus_per_worker is {res.gpus_per_worker:g}: "
                "set train.device to auto, or gpus_per_worker to 0"
            )


# ---------------------------------------------------------------------------- cluster views
def custom_resources(resources: dict[str, float]) -> dict[str, float]:
    """The custom resources of a node's resource dict: all but Ray's built-in ones (CPU, GPU,
    memory, object store, accelerator type, node id)."""
    return {k: float(v) for k, v in resources.items()
            if k not in RAY_BUILTIN_RESOURCES and not k.startswith((ACCELERATOR_PREFIX, "node:"))}


def nodes_from_ray_resources(node_resources: list[dict[str, float]]) -> list[NodeResources]:
    """Nodes from Ray's per-node resource dicts (``ray.nodes()[i]["Resources"]``)."""
    out = []
    for i, res in enumerate(node_resources):
        types = frozenset(k[len(ACCELERATOR_PREFIX):] for k in res if k.startswith(ACCELERATOR_PREFIX))
        out.append(NodeResources(cpus=float(res.get("CPU", 0.0)), gpus=float(res.get("GPU", 0.0)),
                                 accelerator_types=types, name=f"node{i}", custom=custom_resources(res)))
    return out


def nodes_from_ray() -> list[NodeResources]:
    """The alive nodes of the Ray cluster this process is connected to."""
    import ray

    return nodes_from_ray_resources([n["Resources"] for n in ray.nodes() if n.get("Alive")])


def local_nodes(cpus: float | None = None, gpus: float | None = None) -> list[NodeResources]:
    """This machine as one node: its usable CPUs and visible GPUs (without starting Ray; with GPUs,
    their accelerator type is read through :mod:`raysweep.tune.ray_shim`, which imports Ray)."""
    if cpus is None:
        cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    types: frozenset[str] = frozenset()
    if gpus is None:
        import torch

        gpus = float(torch.cuda.device_count())
    if gpus:
        from raysweep.tune.ray_shim import local_accelerator_type

        kind = local_accelerator_type()
        types = frozenset([kind]) if kind else frozenset()
    return [NodeResources(cpus=cpus, gpus=gpus, accelerator_types=types, name="local")]


def nodes_from_cluster_file(path: str | Path) -> list[NodeResources]:
    """Node types of a ``ray up`` cluster YAML at their ``max_workers`` count (the head counts once)."""
    from raysweep.config import read_yaml

    raw = read_yaml(path)
    types: dict[str, Any] = raw.get("available_node_types") or {}
    if not types:
        raise RaysweepError(f"{path}: no available_node_types: not a `ray up` cluster file")
    head = raw.get("head_node_type")
    nodes = []
    for name, spec in types.items():
        resources = dict((spec or {}).get("resources") or {})
        count = 1 if name == head else int((spec or {}).get("max_workers", 0))
        if count <= 0:
            continue
        accel = frozenset(k[len(ACCELERATOR_PREFIX):] for k in resources if k.startswith(ACCELERATOR_PREFIX))
        nodes.append(NodeResources(cpus=float(resources.get("CPU", 0)), gpus=float(resources.get("GPU", 0)),
                                   accelerator_types=accel, name=name, count=count,
                                   custom=custom_resources(resources)))
    return nodes
