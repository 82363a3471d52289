"""The `raysweep` command as a user runs it: subprocesses, exit statuses, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "search_spaces" / "quickstart.yaml")
FAST = ["--set", "train.max_steps=20", "--set", "train.val_every=10", "--set", "data.image_size=16",
        "--set", "data.xysquares.square_size=4", "--set", "data.xysquares.grid_spacing=4",
        "--set", "data.val_size=64"]


def raysweep(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "raysweep.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("loss.lamda_neural=0.5", "trial.loss.lamda_neural: unknown key"),
        ("loss.lambda_neural=1.5", "trial.loss.lambda_neural"),
        ("objective.beta=0", "trial.objective.beta"),
        ("data.dataset=celeba", "data.root is required"),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path: Path, override: str, key: str) -> None:
    result = raysweep("train", QUICKSTART, "--out", str(tmp_path / "o"), "--set", override)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()  # nothing half-made


def test_missing_celeba_folder_names_the_path(tmp_path: Path) -> None:
    result = raysweep("train", QUICKSTART, "--out", str(tmp_path / "o"), "--set", "data.dataset=celeba",
                      "--set", f"data.root={tmp_path / 'nowhere'}")
    assert result.returncode == 2
    assert str(tmp_path / "nowhere") in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_train_quickstart_writes_outputs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = raysweep("train", QUICKSTART, "--out", str(out), *FAST)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["step"] == 20
    final = json.loads((out / "final.json").read_text())
    for key in ("rate", "distortion_sse", "mse", "anisotropy", "aggregated_anisotropy", "active_units", "beta",
                "status"):
        assert key in final
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_accepts_keys_added_since_at_their_defaults(tmp_path: Path) -> None:
    """A run whose config.yaml predates a new key (here data.cache and data.cache_dir) resumes when
    the key is at its default; a key whose value really differs is still refused by name."""
    import yaml

    out = tmp_path / "run"
    assert raysweep("train", QUICKSTART, "--out", str(out), *FAST).returncode == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["data"]["cache"], saved["data"]["cache_dir"]
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    resumed = raysweep("train", QUICKSTART, "--out", str(out), "--resume", *FAST)
    assert resumed.returncode == 0, resumed.stderr
    saved["train"]["seed"] = 12345
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    refused = raysweep("train", QUICKSTART, "--out", str(out), "--resume", *FAST)
    assert refused.returncode == 2 and "train.seed" in refused.stderr and "data.cache" not in refused.stderr


def test_train_with_two_local_workers(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    result = raysweep("train", QUICKSTART, "--out", str(out), "--workers", "2", *FAST)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "final.json").read_text())["world_size"] == 2


def test_workers_must_divide_batch(tmp_path: Path) -> None:
    result = raysweep("train", QUICKSTART, "--out", str(tmp_path / "o"), "--workers", "3", *FAST)
    assert result.returncode == 2 and "train.batch_size" in result.stderr


def test_toy_json_matches_table_keys() -> None:
    result = raysweep("toy", "--json", "--target-rate", "17.25")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {row["metric"] for row in rows} == {"isotropic", "ramped"}
    for row in rows:
        assert {"metric", "target_rate", "achieved_rate", "beta", "anisotropy"} <= set(row)
        assert row["achieved_rate"] == pytest.approx(17.25, rel=1e-3)
    iso = next(r for r in rows if r["metric"] == "isotropic")
    ramp = next(r for r in rows if r["metric"] == "ramped")
    assert abs(iso["anisotropy"]) < 1e-9 < ramp["anisotropy"]


def test_toy_bad_dim_is_one_line() -> None:
    result = raysweep("toy", "--dim", "1")
    assert result.returncode == 2 and "--dim" in result.stderr and "Traceback" not in result.stderr


def test_weights_lists_files_and_finds_them(tmp_path: Path) -> None:
    missing = raysweep("weights", "--json", "--weights-dir", str(tmp_path))
    assert missing.returncode == 0, missing.stderr
    rows = json.loads(missing.stdout)
    vgg = next(r for r in rows if r["loss"] == "lpips")
    assert vgg["file"] == "vgg16-397923af.pth" and not vgg["present"]
    assert str(tmp_path / "vgg16-397923af.pth") in [str(p) for p in vgg["searched"]]
    (tmp_path / "vgg16-397923af.pth").write_bytes(b"placeholder")
    found = json.loads(raysweep("weights", "--json", "--weights-dir", str(tmp_path)).stdout)
    assert next(r for r in found if r["loss"] == "lpips")["present"]


def test_claims_errors_are_one_line(tmp_path: Path) -> None:
    no_store = raysweep("claims", "--experiment", "quickstart", "--storage", str(tmp_path))
    assert no_store.returncode == 2 and "Traceback" not in no_store.stderr
    assert no_store.stderr.strip() == (f"raysweep: error: --storage {tmp_path}: no mlflow.db there; run a sweep with "
                                       "this --storage first, or pass --tracking-uri")
    from raysweep.tracking.store import get_or_create_experiment, make_client, tracking_uri_for

    get_or_create_experiment(make_client(tracking_uri_for(tmp_path, None)), "other")
    unknown = raysweep("claims", "--experiment", "quickstart", "--storage", str(tmp_path), "--json")
    assert unknown.returncode == 2 and unknown.stdout == ""
    lines = unknown.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raysweep: error: --experiment 'quickstart': no such experiment")
