"""``resources.custom``: placing trials on nodes with custom Ray resources (the plan, no Ray)."""

from __future__ import annotations

import pytest

from raysweep.errors import RaysweepError
from raysweep.tune.load import sweep_from_dict
from raysweep.tune.resources import NodeResources, nodes_from_ray_resources, plan_resources
from raysweep.tune.sweep_config import ResourcesConfig

HEAD = NodeResources(cpus=8, name="head")
SPOT = NodeResources(cpus=8, name="spot", count=3, custom={"spot_node": 2.0})


def test_custom_resources_place_trials_on_the_nodes_that_have_them() -> None:
    plan = plan_resources(ResourcesConfig(cpus_per_worker=1, custom={"spot_node": 1}), [HEAD, SPOT])
    assert plan.max_concurrent == 6  # 2 per spot node (its spot_node amount), none on the head
    assert plan.trial_resources() == {"CPU": 1.0, "spot_node": 1.0}
    ddp = plan_resources(ResourcesConfig(workers=2, cpus_per_worker=1, custom={"spot_node": 1}), [HEAD, SPOT])
    assert ddp.max_concurrent == 3 and ddp.worker_resources() == {"CPU": 1.0, "spot_node": 1.0}
    assert "reserving 1 spot_node each" in " ".join(plan.describe())


def test_a_custom_resource_no_node_has_is_refused_in_one_line() -> None:
    with pytest.raises(RaysweepError, match=r"resources.custom.gpu_box: no node of the cluster has"):
        plan_resources(ResourcesConfig(custom={"gpu_box": 1}), [HEAD, SPOT])


@pytest.mark.parametrize(("custom", "message"), [
    ({"CPU": 1}, "resources.custom.CPU: a Ray built-in resource"),
    ({"accelerator_type:A100": 1}, "a Ray built-in resource"),
    ({"spot_node": 0}, "resources.custom.spot_node: 0.0 must be positive"),
])
def test_bad_custom_resources_name_the_key(custom: dict, message: str) -> None:
    with pytest.raises(RaysweepError, match=message):
        sweep_from_dict({"name": "s", "trial": {}, "resources": {"custom": custom}})


def test_ray_node_resources_keep_only_the_custom_ones() -> None:
    [node] = nodes_from_ray_resources([{"CPU": 4.0, "memory": 1e9, "object_store_memory": 1e8,
                                        "node:192.0.2.2": 1.0, "accelerator_type:A100": 1.0, "sweep_node": 100.0}])
    assert node.custom == {"sweep_node": 100.0} and node.accelerator_types == frozenset({"A100"})
