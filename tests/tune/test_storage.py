"""The storage rules: URIs, ``file://``, sweep and trial paths, the parent-run key, text I/O, the Optuna URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from tune_helpers import tiny_sweep

from raysweep import storage
from raysweep.tracking.store import tracking_uri_for
from raysweep.tune.load import sweep_from_dict


@pytest.mark.parametrize(("path", "remote"), [("s3://bucket/sweeps", True), ("gs://bucket", True),
                                               ("file:///tmp/sweeps", False), ("/tmp/sweeps", False),
                                               ("runs", False)])
def test_is_uri(path: str, remote: bool) -> None:
    assert storage.is_uri(path) is remote


def test_file_uri_and_path_give_one_sweep_directory_and_one_mlflow_store(tmp_path: Path) -> None:
    as_uri, as_path = f"file://{tmp_path}", str(tmp_path)
    assert storage.sweep_dir_for(as_uri, "s") == storage.sweep_dir_for(as_path, "s") == f"{tmp_path.resolve()}/s"
    assert storage.parent_run_key(as_uri, "s") == storage.parent_run_key(as_path, "s")
    assert tracking_uri_for(as_uri, None) == tracking_uri_for(as_path, None) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert storage.sweep_dir_for("s3://bucket/sweeps/", "s") == "s3://bucket/sweeps/s"
    assert storage.split_sweep_dir("s3://bucket/sweeps/s/") == ("s3://bucket/sweeps", "s")


def test_default_storage_is_runs_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage.sweep_dir_for(None, "s") == f"{tmp_path.resolve()}/runs/s"
    assert storage.resolve_sweep_dir("runs/s/") == f"{tmp_path.resolve()}/runs/s"
    assert storage.local_sweep_dir("s3://b/s", "s") == f"{tmp_path.resolve()}/runs/s"


def test_trial_outputs_in_the_trial_folder_or_in_scratch(tmp_path: Path) -> None:
    local = storage.trial_output_dir(str(tmp_path / "s"), "s", "abc")
    assert local == tmp_path / "s" / "abc" / "train"
    remote = storage.trial_output_dir("s3://bucket/s", "s", "abc")
    assert remote == storage.trial_scratch_dir("s", "abc") and remote.parts[-4:] == ("raysweep", "s", "abc", "train")


def test_text_round_trip_on_a_path_and_a_file_uri(tmp_path: Path) -> None:
    storage.write_text(f"file://{tmp_path}/a/b.txt", "hello")
    assert (tmp_path / "a" / "b.txt").read_text() == "hello"
    assert storage.read_text(str(tmp_path / "a" / "b.txt")) == "hello"
    assert storage.read_text(str(tmp_path / "missing.txt")) is None


def test_optuna_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    optuna = sweep_from_dict(tiny_sweep("o", search={"mode": "optuna", "num_samples": 2, "optuna": {"metric": "psnr", "mode": "max"},
                                                      "distributions": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}))
    assert storage.optuna_storage_url(optuna, f"{tmp_path}/o") == f"sqlite:///{tmp_path}/o/optuna.db"
    assert storage.optuna_storage_url(optuna, "s3://bucket/o") == f"sqlite:///{tmp_path.resolve()}/runs/o/optuna.db"
    assert storage.optuna_storage_url(sweep_from_dict(tiny_sweep("g")), f"{tmp_path}/g") is None
    bisection = sweep_from_dict(tiny_sweep("m", search={"mode": "matched_rate", "matched_rate": {"targets": [5.0]}}))
    assert storage.optuna_storage_url(bisection, f"{tmp_path}/m") is None
