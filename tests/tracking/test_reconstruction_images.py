"""Reconstructions at every validation (train.log_images): the loop writes one grid per validation of the same
validation images for every trial, the driver logs each as an MLflow image at its step (what MLflow's UI shows
per step and compares across runs), and `raysweep sync` replays them into a store that lacks them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sweep_helpers import init_ray
from tiny_trial import tiny_trial_tree

from raysweep.cli import main
from raysweep.config import TrialConfig, validate_model
from raysweep.names import METRICS_LOG, RECONSTRUCTIONS_DIR, reconstructions_file
from raysweep.tracking import runs
from raysweep.tracking.store import PARENT_TAG, ROLE_SWEEP, ROLE_TAG, make_client, search_all
from raysweep.train.artifacts import RECON_IMAGES
from raysweep.train.loop import train
from raysweep.tune.load import sweep_from_dict
from raysweep.tune.run import run_sweep


def _cfg(**dotted: object) -> TrialConfig:
    return validate_model(TrialConfig, tiny_trial_tree(**dotted))


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_the_loop_writes_one_grid_per_validation_of_the_same_images(tmp_path: Path) -> None:
    first = train(_cfg(), tmp_path / "a", progress=False)
    other = train(_cfg(**{"train.seed": 1}), tmp_path / "b", progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "a" / METRICS_LOG).read_text().splitlines()]
    assert steps == [10, 20]
    for folder in ("a", "b"):
        assert sorted(p.name for p in (tmp_path / folder / RECONSTRUCTIONS_DIR).iterdir()) == [
            Path(reconstructions_file(s)).name for s in steps]
    grid_a, grid_b = _pixels(tmp_path / "a" / reconstructions_file(20)), _pixels(tmp_path / "b" / reconstructions_file(20))
    half = grid_a.shape[0] // 2
    # 8 images of 16 px with 1 px padding: the top rows (the validation images) are the same for any seed,
    # the bottom rows (each model's reconstructions) are not
    assert grid_a.shape == (2 * 17 + 1, RECON_IMAGES * 17 + 1, 3)
    assert np.array_equal(grid_a[:half], grid_b[:half]) and not np.array_equal(grid_a[half:], grid_b[half:])
    assert not np.array_equal(_pixels(tmp_path / "a" / reconstructions_file(10))[half:], grid_a[half:])

    # Off: no grid, and the training is the same (drawing a grid draws no random number)
    quiet = train(_cfg(**{"train.log_images": False}), tmp_path / "c", progress=False)
    assert not (tmp_path / "c" / RECONSTRUCTIONS_DIR).exists()
    assert {k: quiet[k] for k in ("rate", "distortion_sse", "anisotropy")} == {
        k: first[k] for k in ("rate", "distortion_sse", "anisotropy")}
    assert other["rate"] != first["rate"]


def test_a_large_image_is_downscaled_to_a_few_tens_of_kilobytes(tmp_path: Path) -> None:
    cfg = _cfg(**{"data.image_size": 128, "data.xysquares.square_size": 16, "train.max_steps": 2,
                  "train.val_every": 2, "train.batch_size": 4, "data.val_size": 8})
    train(cfg, tmp_path, progress=False)
    path = tmp_path / reconstructions_file(2)
    assert _pixels(path).shape == (2 * 49 + 1, RECON_IMAGES * 49 + 1, 3)  # 48 px a side, not 128
    assert path.stat().st_size < 50_000  # noisy: an untrained decoder; a trained one compresses better


@pytest.fixture(scope="module")
def ray_two_cpus() -> Iterator[None]:
    import ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_every_validation_is_an_mlflow_image_at_its_step_and_sync_replays_them(
        ray_two_cpus: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "runs"
    sweep = sweep_from_dict({"name": "pictures", "trial": tiny_trial_tree(),
                             "search": {"mode": "grid", "grid": {"objective.beta": [0.0625, 0.25]}}})
    assert run_sweep(sweep, storage=str(storage), verbose=0).complete
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    client = make_client(uri)
    experiment_id = client.get_experiment_by_name("pictures").experiment_id
    (parent,) = search_all(client, [experiment_id], f"tags.`{ROLE_TAG}` = '{ROLE_SWEEP}'")
    children = search_all(client, [experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    assert len(children) == 2
    for run in children:
        run_id = run.info.run_id
        steps = {int(m.step) for m in client.get_metric_history(run_id, "step")}
        assert steps == {10, 20} and runs.logged_reconstruction_steps(client, run_id) == steps
        assert run.data.tags.get("mlflow.loggedImages") == "True"  # what MLflow's UI looks for
        names = [Path(info.path).name for info in client.list_artifacts(run_id, "images")]
        assert len(names) == 4 and sum(name.endswith("+compressed.webp") for name in names) == 2
        sizes = [info.file_size for info in client.list_artifacts(run_id, "images")]
        print(f"\nMLflow image storage per validation: {sum(sizes) / len(steps) / 1000:.1f} kB")
        # the logged image is the trial's own grid of that step
        local = client.download_artifacts(run_id, f"images/{sorted(n for n in names if n.endswith('.png'))[-1]}",
                                          str(tmp_path / run_id))
        trial_dir = storage / "pictures" / run.data.tags["raysweep.trial_id"] / "train"
        assert np.array_equal(_pixels(Path(local)), _pixels(trial_dir / reconstructions_file(20)))

    # the report's panel: per beta, the validation images over each lambda's reconstructions at the last step
    from raysweep.frontier.report import build_report

    page = build_report("pictures", uri, tmp_path / "report", log_to_mlflow=False).read_text()
    assert page.count('<table class="recon">') == 2 and "<caption>β = 0.0625</caption>" in page
    strips = sorted((tmp_path / "report" / "plots").glob("*_recon_*.png"))
    assert len(strips) == 4  # per beta: the images and one lambda
    top, bottom = _pixels(strips[1]), _pixels(strips[0])  # ..._0_0.png (reconstructions), ..._0_images.png
    assert top.shape == bottom.shape == (17 + 1, RECON_IMAGES * 17 + 1, 3)

    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert main(["sync", str(storage / "pictures"), "--tracking-uri", fresh]) == 0
    assert "4 images" in capsys.readouterr().out
    fresh_client = make_client(fresh)
    fresh_id = fresh_client.get_experiment_by_name("pictures").experiment_id
    for run in search_all(fresh_client, [fresh_id], f"tags.`{PARENT_TAG}` != ''"):
        assert runs.logged_reconstruction_steps(fresh_client, run.info.run_id) == {10, 20}
    assert main(["sync", str(storage / "pictures"), "--tracking-uri", fresh]) == 0
    assert "nothing written" in capsys.readouterr().out  # replayed once, not twice
