"""`raysweep validate SWEEP.yaml`: check a sweep completely and describe it, without starting Ray.

It prints the number of trials, what varies, the scheduler and searcher, the resource plan per trial
and the maximum concurrency on a cluster: this machine by default, the node types of a ``ray up``
cluster file (``--cluster cluster/ray-cluster-a100.yaml``), or a running cluster (``--address``,
which connects to it without starting anything). Nothing here imports Ray, except to join a running
cluster (``--address``) and to name a local GPU's accelerator type.
"""

from __future__ import annotations

from pathlib import Path

from raysweep.errors import RaysweepError
from raysweep.tune.load import load_sweep
from raysweep.tune.resources import (
    NodeResources,
    local_nodes,
    nodes_from_cluster_file,
    nodes_from_ray,
    plan_resources,
)
from raysweep.tune.space import asha_max_t, expand_sweep


def describe_nodes(nodes: list[NodeResources]) -> str:
    """One line per node type: count x CPUs, GPUs, accelerator type."""
    parts = []
    for node in nodes:
        accel = f" {'/'.join(sorted(node.accelerator_types))}" if node.accelerator_types else ""
        gpus = f", {node.gpus:g} GPU{accel}" if node.gpus else ""
        parts.append(f"{node.count} x {node.name} ({node.cpus:g} CPU{gpus})")
    return "; ".join(parts)


def cluster_nodes(address: str | None, cluster_file: Path | None) -> tuple[list[NodeResources], str]:
    """The nodes to plan against and a phrase saying which cluster they describe."""
    if cluster_file is not None:
        return nodes_from_cluster_file(cluster_file), f"cluster file {cluster_file}"
    if address is not None:
        import ray

        ray.init(address=address, log_to_driver=False)
        try:
            return nodes_from_ray(), f"Ray cluster at {address}"
        finally:
            ray.shutdown()
    return local_nodes(), "this machine"


def validate_sweep(
    path: Path, overrides: list[str] | None = None, name: str | None = None, address: str | None = None,
    cluster_file: Path | None = None,
) -> str:
    """Validate the sweep at `path` against a cluster and return the report ``validate`` prints;
    raise a one-line RaysweepError when the sweep or its plan is invalid."""
    sweep = load_sweep(path, overrides, name)
    expanded = expand_sweep(sweep)
    search = sweep.search
    max_t = asha_max_t(search.scheduler, expanded) if search.scheduler.type == "asha" else None
    nodes, where = cluster_nodes(address, cluster_file)
    try:
        plan = plan_resources(sweep.resources, nodes)
    except RaysweepError as err:
        raise RaysweepError(f"{path}: {err} (planned on {where})") from None
    lines = [f"{path}: sweep {sweep.name} is valid"]
    cells = len(expanded.cells)
    per_cell = f" ({cells} cells x {expanded.samples_per_cell} samples)" if expanded.samples_per_cell > 1 else ""
    if search.matched_rate is not None:
        mr = search.matched_rate
        tasks = cells * len(mr.targets)
        most = tasks * (1 if mr.strategy == "geco" else mr.max_trials)
        each = 1 if mr.strategy == "geco" else mr.max_trials
        lines.append(f"trials: at most {most} ({cells} cell{'s' * (cells != 1)} x {len(mr.targets)} "
                     f"target{'s' * (len(mr.targets) != 1)} = {tasks} operating point{'s' * (tasks != 1)}, "
                     f"up to {each} trial{'s' * (each != 1)} each)")
        lines.append(f"search: matched_rate, strategy {mr.strategy}, targets "
                     f"{', '.join(f'{t:g}' for t in mr.targets)} nats, tolerance {mr.tolerance:g} (relative)")
        if mr.strategy != "geco":
            lines.append(f"  beta bracket [{mr.beta_min:g}, {mr.beta_max:g}], {mr.probes} probes in flight per "
                         f"(cell, target)" + (", ASHA on rate_error" if mr.uses_asha else ""))
    else:
        lines.append(f"trials: {expanded.num_trials}{per_cell}")
        lines.append(f"search: {search.mode}")
    for key in expanded.varying_keys:
        values = sorted({repr(cell.flat[key]) for cell in expanded.cells})
        lines.append(f"  {key}: {', '.join(values)}")
    for key, dist in expanded.distributions.items():
        lines.append(f"  {key}: {dist.kind} {getattr(dist, dist.kind)}")
    if search.optuna is not None:
        lines.append(f"  optuna TPE per cell: {search.optuna.mode} {search.optuna.metric}")
    sched = search.scheduler
    if sched.type == "asha":
        lines.append(f"scheduler: ASHA on {sched.mode} {sched.metric}, grace {sched.grace_period}, reduction "
                     f"{sched.reduction_factor:g}, max_t {max_t} validations")
    else:
        lines.append("scheduler: FIFO (every trial runs to its end)")
    lines.append(f"cluster: {where}: {describe_nodes(nodes)}")
    lines.extend(plan.describe())
    return "\n".join(lines)
