"""``raysweep.load_run`` and ``raysweep export`` on one real sweep: the real sweep runner on a local Ray
(2 CPUs), its real MLflow store (``<storage>/mlflow.db``), Tune's real checkpoint folders, and moto's
real S3 server for a trial folder on object storage.

The sweep runs once for the module: three tiny trials (:mod:`tiny_trial`, 20 steps, a validation and
a checkpoint every 10, ``checkpoint.num_to_keep`` 2) that differ where loading can go wrong: the SSE
and LV-VAE pixel terms (a decoder with or without a per-pixel log-variance) and RGB or grey images
(the channels come from the weights, not the config). Tests that take a checkpoint away put it back.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from sweep_helpers import init_ray
from tiny_trial import tiny_trial_tree

import raysweep
from raysweep.cli import main
from raysweep.config import TrialConfig, load_trial_config
from raysweep.errors import RaysweepError
from raysweep.tracking.store import make_client
from raysweep.tracking.trained import EXPORT_WEIGHTS, LoadedRun, model_from_weights

pytestmark = pytest.mark.slow

SWEEP = "loadrun"
CELLS = [
    {"loss.pixel": "sse", "data.xysquares.rgb": True},
    {"loss.pixel": "learned_sigma_pixel", "data.xysquares.rgb": True},
    {"loss.pixel": "sse", "data.xysquares.rgb": False},
]


@dataclass
class Sweep:
    storage: Path  # <tmp>/runs: the default ./runs when the working directory is <tmp>
    sweep_dir: Path
    uri: str
    runs: list  # the child runs (mlflow.entities.Run), one per trial

    def folder(self, run) -> Path:
        return self.sweep_dir / run.data.tags["raysweep.trial_id"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sweep]:
    import ray

    from raysweep.tune.load import sweep_from_dict
    from raysweep.tune.run import run_sweep

    storage = tmp_path_factory.mktemp("load_run") / "runs"
    raw = {"name": SWEEP, "trial": tiny_trial_tree(), "search": {"mode": "grid", "cells": CELLS}}
    init_ray(num_cpus=2)
    try:
        outcome = run_sweep(sweep_from_dict(raw), storage=str(storage), verbose=0)
    finally:
        ray.shutdown()
    assert [row["status"] for row in outcome.rows] == ["finished"] * 3, outcome.rows
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    client = make_client(uri)
    experiment = client.get_experiment_by_name(SWEEP).experiment_id
    runs = client.search_runs([experiment], "tags.`raysweep.role` = 'trial'")
    assert len(runs) == 3
    yield Sweep(storage, Path(outcome.sweep_dir), uri, runs)


def _same_weights(a: LoadedRun, b: LoadedRun) -> bool:
    left, right = a.model.state_dict(), b.model.state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_every_run_loads_by_id_by_name_and_by_folder(sweep: Sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(sweep.storage.parent)  # ./runs is the default storage
    for run in sweep.runs:
        folder = sweep.folder(run)
        by_id = raysweep.load_run(run.info.run_id)
        by_name = raysweep.load_run(run.info.run_name, experiment=SWEEP, storage=sweep.storage)
        by_folder = raysweep.load_run(folder)
        by_uri = raysweep.load_run(run.info.run_id, tracking_uri=sweep.uri)
        for loaded in (by_id, by_name, by_folder, by_uri):
            assert isinstance(loaded, raysweep.LoadedRun)
            assert loaded.run_id == run.info.run_id  # the folder found its run in the sweep's store
            assert loaded.folder == str(folder)
            assert loaded.checkpoint == str(folder / "checkpoint_000001")  # the newest of the two Tune kept
            assert loaded.step == 20 and loaded.metrics["step"] == 20 and loaded.metrics["status"] == "finished"
            assert loaded.config == load_trial_config(folder / "train" / "config.yaml")
            assert isinstance(loaded.config, TrialConfig) and not loaded.model.training
            assert _same_weights(loaded, by_id)
        assert by_id.metrics == json.loads((folder / "train" / "final.json").read_text())
        cell = {"loss.pixel": by_id.config.loss.pixel, "data.xysquares.rgb": by_id.config.data.xysquares.rgb}
        assert cell in CELLS
        assert by_id.model.in_channels == (3 if cell["data.xysquares.rgb"] else 1)
        assert by_id.model.pixel_logvar == (cell["loss.pixel"] == "learned_sigma_pixel")


def test_the_model_reproduces_its_logged_validation_metrics(sweep: Sweep) -> None:
    """Encode and decode the run's validation set (its split from data.split_seed, its fixed
    reparameterisation noise) and recompute rate and distortion: the run's final.json and MLflow
    metrics say the same, to float rounding."""
    from raysweep.data import build_datasets
    from raysweep.train.evaluate import validation_noise

    for run in sweep.runs:
        loaded = raysweep.load_run(run.info.run_id, storage=sweep.storage)
        model, cfg = loaded.model, loaded.config
        _, val = build_datasets(cfg.data, progress=False)
        assert len(val) == cfg.data.val_size
        noise = validation_noise(len(val), model.latent_shape, cfg.train.seed)
        kl = sse = 0.0
        with torch.no_grad():
            for start in range(0, len(val), 32):  # the loop's validation batch: max(batch per worker, 32)
                x = torch.stack([val[i][0] for i in range(start, min(start + 32, len(val)))])
                mu, logvar = model.encode(x)
                z = mu + torch.exp(0.5 * logvar) * noise[start : start + len(x)]
                x_hat, _ = model.decode(z)
                mu64, logvar64 = mu.double().flatten(1), logvar.double().flatten(1)
                kl += float((0.5 * (mu64**2 + logvar64.exp() - 1.0 - logvar64)).sum())
                sse += float(((x_hat - x) ** 2).flatten(1).sum(1).double().sum())
        rate, distortion = kl / len(val), sse / len(val)
        for logged in (loaded.metrics, run.data.metrics):
            assert rate == pytest.approx(logged["rate"], rel=1e-6), run.info.run_name
            assert distortion == pytest.approx(logged["distortion_sse"], rel=1e-6), run.info.run_name
        assert rate > 0 and math.isfinite(distortion)


def test_export_writes_weights_a_valid_config_and_metrics(sweep: Sweep, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from raysweep.data import build_datasets
    from raysweep.train.loop import build_trial_model

    for i, run in enumerate(sweep.runs):
        out = tmp_path / f"export_{i}"
        assert main(["export", run.info.run_name, "--experiment", SWEEP, "--storage", str(sweep.storage),
                     "--out", str(out)]) == 0
        assert run.info.run_id in capsys.readouterr().out
        assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "final.json", EXPORT_WEIGHTS]
        loaded = raysweep.load_run(run.info.run_id, storage=sweep.storage)
        config = load_trial_config(out / "config.yaml")  # what `raysweep train` reads
        assert config == loaded.config
        assert json.loads((out / "final.json").read_text()) == json.loads(json.dumps(dict(loaded.metrics)))
        with safe_open(str(out / EXPORT_WEIGHTS), "pt") as handle:
            assert handle.metadata()["raysweep.run_id"] == run.info.run_id
        # a model built afresh from the config (its channels from the dataset) takes the weights whole
        weights = load_file(str(out / EXPORT_WEIGHTS))
        _, val = build_datasets(config.data, progress=False)
        fresh = build_trial_model(config, val.channels)
        fresh.load_state_dict(weights)
        fresh.eval()
        x = torch.stack([val[j][0] for j in range(8)])
        with torch.no_grad():
            mine, theirs = fresh(x, sample=False), loaded.model(x, sample=False)
            again = model_from_weights(config, weights)(x, sample=False)
        for got in (mine, again):
            assert torch.equal(got.mu, theirs.mu) and torch.equal(got.logvar, theirs.logvar)
            assert torch.equal(got.x_hat, theirs.x_hat)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # a taken --out is refused in one line, and left as it was
    before = (out / EXPORT_WEIGHTS).read_bytes()
    assert main(["export", sweep.runs[0].info.run_id, "--storage", str(sweep.storage), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--out {out} already exists" in err
    assert (out / EXPORT_WEIGHTS).read_bytes() == before


def test_a_trial_folder_on_object_storage_loads(sweep: Sweep, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    import pyarrow.fs

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
    from cluster_helpers import S3_ENV, start_moto, stop_process

    proc, url = start_moto(tmp_path / "moto.log")
    try:
        for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": url}.items():
            monkeypatch.setenv(key, value)
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket="sweeps")
        run = sweep.runs[1]
        folder = sweep.folder(run)
        s3, _ = pyarrow.fs.FileSystem.from_uri("s3://sweeps")
        pyarrow.fs.copy_files(str(folder), f"sweeps/{SWEEP}/{folder.name}", destination_filesystem=s3)
        uri = f"s3://sweeps/{SWEEP}/{folder.name}"
        remote = raysweep.load_run(uri + "/")
        local = raysweep.load_run(run.info.run_id, storage=sweep.storage)
        assert remote.checkpoint == f"{uri}/checkpoint_000001" and remote.folder == uri and remote.run_id is None
        assert remote.config == local.config and remote.metrics == local.metrics and remote.step == 20
        assert _same_weights(remote, local)
        with pytest.raises(RaysweepError) as caught:
            raysweep.load_run(f"s3://sweeps/{SWEEP}/nosuchtrial")
        assert "no checkpoint was kept in s3://sweeps/" in str(caught.value) and "folder itself is gone" in str(caught.value)
    finally:
        stop_process(proc)


def test_unknown_ambiguous_and_parent_runs_are_refused_in_one_line(sweep: Sweep, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    client = make_client(sweep.uri)
    run = sweep.runs[0]

    def refusal(*args, **kwargs) -> str:
        with pytest.raises(RaysweepError) as caught:
            raysweep.load_run(*args, storage=sweep.storage, **kwargs)
        text = str(caught.value)
        assert "\n" not in text
        return text

    assert "no run has this run id or run name" in refusal("0" * 32)
    assert "no run has this run name" in refusal("no such run", experiment=SWEEP)
    assert "--experiment 'nope': no such experiment" in refusal(run.info.run_name, experiment="nope")
    parent = run.data.tags["mlflow.parentRunId"]
    assert f"run {parent} ({SWEEP}) is the parent run of sweep {SWEEP}" in refusal(parent)
    twin = client.create_run(run.info.experiment_id, run_name=run.info.run_name)
    try:
        text = refusal(run.info.run_name, experiment=SWEEP)
        assert "is ambiguous: 2 runs" in text and run.info.run_id in text and twin.info.run_id in text
        twin_text = refusal(twin.info.run_id)  # a run the sweep did not write has no trial tags
        assert "raysweep.trial_id" in twin_text and "pass its trial folder" in twin_text
    finally:
        client.delete_run(twin.info.run_id)
    out = tmp_path / "unused"
    assert main(["export", "no such run", "--storage", str(sweep.storage), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("raysweep: error: run 'no such run'")
    assert not out.exists()


def test_a_run_whose_checkpoints_are_gone_is_refused_naming_run_and_folder(
        sweep: Sweep, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    run = sweep.runs[2]
    folder = sweep.folder(run)
    newest = folder / "checkpoint_000001" / "state.pt"
    # a damaged newest checkpoint: the older intact one is loaded, with a warning
    saved = newest.read_bytes()
    try:
        newest.write_bytes(saved[: len(saved) // 2])
        loaded = raysweep.load_run(run.info.run_id, storage=sweep.storage)
        assert loaded.checkpoint == str(folder / "checkpoint_000000") and loaded.step == 10
        assert "skipping damaged checkpoint" in caplog.text
    finally:
        newest.write_bytes(saved)
    # every checkpoint deleted (checkpoint.num_to_keep, or never written): one line, no export
    kept = tmp_path / "kept"
    kept.mkdir()
    for path in folder.glob("checkpoint_*"):
        shutil.move(str(path), kept / path.name)
    try:
        with pytest.raises(RaysweepError) as caught:
            raysweep.load_run(run.info.run_id, storage=sweep.storage)
        text = str(caught.value)
        assert "\n" not in text
        assert text.startswith(f"run {run.info.run_id} ({run.info.run_name}): no checkpoint was kept in {folder};")
        assert "checkpoint.num_to_keep" in text
        out = tmp_path / "export"
        assert main(["export", run.info.run_id, "--storage", str(sweep.storage), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "no checkpoint was kept" in err
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    finally:
        for path in kept.iterdir():
            shutil.move(str(path), folder / path.name)
    assert raysweep.load_run(run.info.run_id, storage=sweep.storage).step == 20


@pytest.mark.parametrize("arch", ["vector_vae", "autoencoder_kl"])
def test_weights_in_any_order_rebuild_their_model(arch: str) -> None:
    """The image channels come from the encoder's first convolution whatever order the weights come
    in (safetensors sorts them); weights of another config are refused in one line."""
    from raysweep.config import trial_config_from_dict
    from raysweep.train.loop import build_trial_model

    config = trial_config_from_dict(tiny_trial_tree(**{"model.arch": arch, "model.latent_dim": 4}))
    for channels in (1, 3):
        weights = build_trial_model(config, channels).state_dict()
        shuffled = dict(sorted(weights.items(), key=lambda item: item[0][::-1]))
        model = model_from_weights(config, shuffled)
        assert model.in_channels == channels and not model.training
        assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    other = trial_config_from_dict(tiny_trial_tree(**{"model.arch": arch, "model.latent_dim": 8}))
    with pytest.raises(RaysweepError) as caught:
        model_from_weights(other, weights)
    assert "\n" not in str(caught.value) and "do not fit the model its config describes" in str(caught.value)


def test_the_report_says_how_to_load_each_run(sweep: Sweep, tmp_path: Path) -> None:
    import pandas as pd

    from raysweep.frontier.operating_points import operating_points_html
    from raysweep.frontier.report import build_report

    page = build_report(SWEEP, sweep.uri, tmp_path / "report", log_to_mlflow=False).read_text()
    for run in sweep.runs:
        assert f'<td class="load"><code>raysweep.load_run(&quot;{run.info.run_id}&quot;)</code></td>' in page
    assert "<th>load</th>" in page
    points = pd.DataFrame([{"cell": "c", "target_rate": 2.0, "run_id": sweep.runs[0].info.run_id},
                           {"cell": "c", "target_rate": 4.0, "run_id": None}])
    section = operating_points_html(points, "", "1", "http://127.0.0.1:5000")
    rows = [line for line in section.splitlines() if 'class="operating-point"' in line]
    assert f"raysweep.load_run(&quot;{sweep.runs[0].info.run_id}&quot;)" in rows[0]
    assert rows[1].endswith("<td></td></tr>")
