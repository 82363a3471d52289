"""The resource plan: a pure function of the `resources` block and the cluster's nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysweep.errors import RaysweepError
from raysweep.tune.resources import (
    DRIVER_MEMORY_BYTES,
    NodeResources,
    nodes_from_cluster_file,
    nodes_from_ray_resources,
    plan_resources,
)
from raysweep.tune.sweep_config import ResourcesConfig

REPO = Path(__file__).resolve().parents[2]
GPU_NODE = NodeResources(cpus=16, gpus=1, accelerator_types=frozenset({"A100"}))
EIGHT_GPUS = NodeResources(cpus=96, gpus=8, accelerator_types=frozenset({"A100"}), count=2)


def test_quarter_gpu_packs_four_trials_per_gpu() -> None:
    plan = plan_resources(ResourcesConfig(workers=1, gpus_per_worker=0.25, cpus_per_worker=2), [GPU_NODE])
    assert plan.trials_per_gpu == 4
    assert plan.max_concurrent == 4
    assert not plan.uses_trainer
    assert plan.trial_resources() == {"CPU": 2.0, "GPU": 0.25}
    # With 3 CPUs left per trial the CPUs, not the GPU, bound the packing.
    assert plan_resources(ResourcesConfig(gpus_per_worker=0.25, cpus_per_worker=6), [GPU_NODE]).max_concurrent == 2


def test_four_workers_use_whole_gpus() -> None:
    plan = plan_resources(ResourcesConfig(workers=4, gpus_per_worker=1, cpus_per_worker=8, accelerator_type="A100"),
                          [NodeResources(cpus=4, name="head"), EIGHT_GPUS])
    assert plan.uses_trainer
    assert plan.worker_resources() == {"CPU": 8.0, "GPU": 1.0}
    assert plan.trials_per_gpu is None
    assert plan.max_concurrent == 2 * 2  # two trials per 8-GPU node, two nodes
    # The Tune trial is only the TorchTrainer's driver: it reserves no CPU or GPU.
    assert plan.trial_resources() == {"memory": float(DRIVER_MEMORY_BYTES)}


def test_fractional_gpu_ddp_is_rejected() -> None:
    with pytest.raises(RaysweepError) as err:
        plan_resources(ResourcesConfig(workers=2, gpus_per_worker=0.5), [GPU_NODE])
    message = str(err.value)
    assert "\n" not in message
    assert "resources.gpus_per_worker 0.5 with resources.workers 2" in message
    assert "allowed only with one worker" in message


@pytest.mark.parametrize(
    ("res", "nodes", "expected"),
    [
        (ResourcesConfig(workers=16, gpus_per_worker=1), [EIGHT_GPUS], "a trial needs 16 GPUs"),
        (ResourcesConfig(gpus_per_worker=1), [NodeResources(cpus=64)], "the cluster has no GPU (CPU only)"),
        (ResourcesConfig(gpus_per_worker=1, accelerator_type="H100"), [GPU_NODE], "no node of the cluster has it"),
        (ResourcesConfig(gpus_per_worker=2), [EIGHT_GPUS], "a worker drives one GPU"),
        (ResourcesConfig(cpus_per_worker=4, workers=2), [NodeResources(cpus=2)], "a trial needs 8 CPUs"),
        (ResourcesConfig(accelerator_type="A100"), [GPU_NODE], "accelerator_type A100 needs GPUs"),
    ],
)
def test_impossible_plans_are_rejected(res: ResourcesConfig, nodes: list[NodeResources], expected: str) -> None:
    with pytest.raises(RaysweepError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        plan_resources(res, nodes)


def test_cpu_trials_on_a_two_core_machine() -> None:
    two_cores = [NodeResources(cpus=2)]
    assert plan_resources(ResourcesConfig(), two_cores).max_concurrent == 2
    ddp = plan_resources(ResourcesConfig(workers=2), two_cores)
    assert ddp.max_concurrent == 1 and ddp.uses_trainer


def test_nodes_from_ray_and_cluster_file() -> None:
    nodes = nodes_from_ray_resources([{"CPU": 8.0, "GPU": 4.0, "accelerator_type:A100": 1.0, "memory": 1e9}])
    assert nodes[0].gpus == 4 and nodes[0].accelerator_types == frozenset({"A100"})
    cluster = nodes_from_cluster_file(REPO / "cluster" / "ray-cluster-a100.yaml")
    gpu_types = [n for n in cluster if n.gpus]
    assert gpu_types and all("A100" in n.accelerator_types for n in gpu_types)
    assert any(n.gpus == 0 for n in cluster)  # the CPU head
