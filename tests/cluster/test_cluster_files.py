"""The cluster templates against the schemas their tools publish and against the pins (issue 25).

- ``cluster/ray-cluster-a100.yaml``: Ray's own cluster schema and ``validate_config`` (what
  ``ray up`` runs first), a current GPU image with its driver requirement stated, EFS mounted on
  every host, the head's MLflow server.
- ``cluster/rayjob-a100.yaml``: the RayJob CRD's ``openAPIV3Schema`` of KubeRay 1.5.1 (vendored in
  ``schemas/``), checked strictly as ``kubectl apply`` (server-side field validation ``Strict``)
  does: a field the schema does not know is an error, not silently pruned. Autoscaling on with
  min <= replicas <= max.
- ``cluster/Dockerfile``: built on Ray's GPU image of the pinned Ray and Python; the RayJob runs that
  image and the pinned Ray.
- ``cluster/mlflow-head.sh``: the head's MLflow server really serves and copies its database to the
  shared folder when stopped.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
CRD_SCHEMA = Path(__file__).resolve().parent / "schemas" / "kuberay-1.5.1-rayjob-v1.json.gz"
IMAGE_TAG = re.compile(r"raysweep:(\d+\.\d+\.\d+)-py(\d)(\d+)-gpu$")


def _pins() -> tuple[str, tuple[int, int]]:
    """(the pinned Ray version, the lowest Python version raysweep supports) from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    [ray_pin] = [d for d in project["dependencies"] if re.match(r"ray\[", d)]
    python = re.fullmatch(r">=\s*(\d+)\.(\d+)", project["requires-python"])
    assert python is not None, project["requires-python"]
    return ray_pin.split("==")[1], (int(python.group(1)), int(python.group(2)))


# ------------------------------------------------------------------------------ ray up
def test_ray_up_file_passes_rays_schema_and_validate_config() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "ray-cluster-a100.yaml").read_text())
    # As `ray up` does before anything else: Ray's defaults filled in, then ray-schema.json and its checks.
    validate_config(prepare_config(copy.deepcopy(config)))


def test_ray_up_file_has_a_current_image_shared_storage_and_mlflow() -> None:
    text = (CLUSTER / "ray-cluster-a100.yaml").read_text()
    config = yaml.safe_load(text)
    ray_pin, _ = _pins()
    assert config["docker"]["image"].startswith(f"rayproject/ray:{ray_pin}-py")
    for name, node in config["available_node_types"].items():
        image = node["node_config"].get("ImageId", "")
        assert image and image.lower() != "latest_dlami", f"{name}: no ImageId (Ray's default AMI has an old driver)"
        assert "nvidia-driver" in image, image
    assert re.search(r"driver >= 580", text), "the driver version the pinned torch needs is not stated"
    mount = " ".join(config["initialization_commands"])
    assert "mount -t nfs4" in mount and "/mnt/efs" in mount and "efs." in mount
    assert "-v /mnt/efs/sweeps:/mnt/sweeps" in config["docker"]["run_options"]
    assert config["provider"]["security_group"]["GroupName"] in text.split("TCP 2049")[0]
    assert any("mlflow-head.sh" in command for command in config["head_start_ray_commands"])


def test_aws_extra_brings_boto3() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("boto3") for d in project["optional-dependencies"]["aws"])


# ------------------------------------------------------------------------------ KubeRay
def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields forbidden wherever it lists the properties and does not
    keep unknown fields (``x-kubernetes-preserve-unknown-fields``), as Strict field validation does."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _rayjob() -> dict[str, Any]:
    documents = list(yaml.safe_load_all((CLUSTER / "rayjob-a100.yaml").read_text()))
    [job] = [d for d in documents if d and d.get("kind") == "RayJob"]
    return job


def _crd_validator() -> Any:
    import jsonschema

    schema = json.loads(gzip.decompress(CRD_SCHEMA.read_bytes()))["schema"]
    return jsonschema.Draft7Validator(_strict(schema))


def test_rayjob_validates_against_the_kuberay_crd_schema() -> None:
    errors = sorted(_crd_validator().iter_errors(_rayjob()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:10])


def test_the_strict_crd_check_catches_a_misspelt_field() -> None:
    job = _rayjob()
    job["spec"]["rayClusterSpec"]["enableInTreeAutoScaling"] = True
    assert any("enableInTreeAutoScaling" in e.message for e in _crd_validator().iter_errors(job))


def test_rayjob_autoscales_runs_the_pinned_image_and_tracks_on_the_head() -> None:
    job = _rayjob()
    cluster = job["spec"]["rayClusterSpec"]
    ray_pin, (major, minor) = _pins()
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == ray_pin
    for group in cluster["workerGroupSpecs"]:
        assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group
        assert group["maxReplicas"] > group["minReplicas"], "autoscaling with min == max scales nothing"
    pods = [cluster["headGroupSpec"]["template"]["spec"], *(g["template"]["spec"] for g in cluster["workerGroupSpecs"])]
    images = {c["image"] for pod in pods for c in pod["containers"]}
    for image in images:
        match = IMAGE_TAG.search(image)
        assert match, f"{image}: tag the image built by cluster/Dockerfile as raysweep:<ray>-py<python>-gpu"
        assert (match.group(1), int(match.group(2)), int(match.group(3))) == (ray_pin, major, minor), image
    assert "working_dir" not in job["spec"].get("runtimeEnvYAML", "")  # the code is in the image
    entrypoint = job["spec"]["entrypoint"]
    assert "/home/ray/raysweep/search_spaces/" in entrypoint and "tracking.uri=http://127.0.0.1:5000" in entrypoint
    sidecar = [c for c in cluster["headGroupSpec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    assert sidecar and "cluster/mlflow-head.sh" in " ".join(sidecar[0]["command"])


def test_dockerfile_builds_on_the_ray_gpu_image_of_the_pins() -> None:
    text = (CLUSTER / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    [base] = re.findall(r"^FROM (\S+)", text, flags=re.M)
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    ray_pin, (major, minor) = _pins()
    assert image == f"rayproject/ray:{ray_pin}-py{major}{minor}-gpu", image
    assert "WORKDIR /home/ray/raysweep" in text and "pip install" in text


# ------------------------------------------------------------------------ mlflow-head.sh
@pytest.mark.slow
def test_head_mlflow_server_serves_and_copies_its_database_when_stopped(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    local, shared = tmp_path / "local", tmp_path / "shared"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "mlflow-head.log").open("w")
    proc = subprocess.Popen(["bash", str(CLUSTER / "mlflow-head.sh"), str(local), str(shared), str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "mlflow-head.log").read_text()
                time.sleep(0.5)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"http://127.0.0.1:{port}")
        experiment = client.create_experiment("head")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "rate", 1.5)
        client.log_text(run.info.run_id, "hello", "note.txt")  # proxied to the shared artifacts folder
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    assert proc.returncode == 0, (tmp_path / "mlflow-head.log").read_text()
    assert (local / "mlflow.db").is_file()
    with sqlite3.connect(shared / "mlflow.db") as db:
        assert db.execute("select count(*) from runs").fetchone() == (1,)
    assert list((shared / "artifacts").rglob("note.txt"))
    with pytest.raises(OSError):  # the server's processes are gone with the script
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
