"""Fixtures of the sweep tests: one local Ray instance (2 CPUs) shared by the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


def _start_ray() -> str:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    return str(ray.get_runtime_context().gcs_address)


@pytest.fixture(scope="session")
def _ray_session() -> Iterator[dict[str, str]]:
    import ray

    state = {"address": _start_ray()}
    yield state
    ray.shutdown()


@pytest.fixture
def ray_address(_ray_session: dict[str, str]) -> str:
    """GCS address of the shared local Ray instance (restarted if another test shut it down)."""
    import ray

    if not ray.is_initialized():
        _ray_session["address"] = _start_ray()
    return _ray_session["address"]
