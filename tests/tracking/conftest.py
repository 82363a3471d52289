"""Fixtures of the tracking tests: a private Ray instance and a real MLflow tracking server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sweep_helpers import init_ray, mlflow_server


@pytest.fixture(scope="module")
def ray_cpus() -> Iterator[None]:
    """A local Ray instance with 6 logical CPUs (6 one-CPU trials at once), shut down after the module."""
    import ray

    init_ray(num_cpus=6)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real ``mlflow server`` process (SQLite backend) on a free port of 127.0.0.1."""
    folder: Path = tmp_path_factory.mktemp("mlflow_server")
    with mlflow_server(folder) as url:
        yield url
