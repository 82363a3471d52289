"""Every ready-made sweep validates, and every cluster file parses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raysweep.cli import main
from raysweep.config import load_trial_config
from raysweep.tune.load import load_sweep

REPO = Path(__file__).resolve().parents[2]
SWEEPS = sorted((REPO / "search_spaces").glob("*.yaml"))
CLUSTER_FILES = sorted((REPO / "cluster").glob("*.yaml"))
A100_CLUSTER = REPO / "cluster" / "ray-cluster-a100.yaml"


def test_the_ready_made_sweeps_are_all_there() -> None:
    names = {p.stem for p in SWEEPS}
    assert {"quickstart", "paper_rate_vs_lambda", "paper_matched_rate", "xysquares_spacing", "lvae",
            "fractional_gpu"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_sweep_passes_validate(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = load_sweep(path)
    # GPU sweeps are planned on the A100 cluster they are written for; CPU sweeps on this machine.
    where = ["--cluster", str(A100_CLUSTER)] if sweep.resources.gpus_per_worker > 0 else []
    assert main(["validate", str(path), *where]) == 0
    out = capsys.readouterr().out
    assert f"sweep {sweep.name} is valid" in out
    assert "max concurrency:" in out and "trials:" in out


def test_quickstart_trial_block_still_trains_alone() -> None:
    cfg = load_trial_config(REPO / "search_spaces" / "quickstart.yaml")
    assert cfg.data.dataset == "xysquares" and cfg.model.preset == "tiny"


def test_gpu_sweep_on_this_cpu_machine_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    # The fractional-GPU example cannot run on a machine without GPUs: one line, exit status 2.
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["validate", str(REPO / "search_spaces" / "fractional_gpu.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the cluster has no GPU" in err


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=[p.name for p in CLUSTER_FILES])
def test_cluster_yaml_parses(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert documents and all(isinstance(d, dict) for d in documents)
