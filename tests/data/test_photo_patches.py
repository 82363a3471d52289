"""photo_patches: fixed patches of the photographs inside the scikit-image wheel, validation cut from
a region no training patch touches, no download, a one-line error naming the extra when missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raysweep.config import DataConfig
from raysweep.data import build_datasets, build_latent_sample
from raysweep.data.photo_patches import PHOTOS, PhotoPatches, load_photos, photo_folder
from raysweep.errors import RaysweepError
from raysweep.train.loop import train


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    return load_photos()


def test_every_photo_is_a_file_inside_the_installed_wheel() -> None:
    folder = photo_folder()
    assert folder.parent.name == "skimage" and folder.name == "data"
    assert all((folder / name).is_file() for name in PHOTOS)
    assert len(PHOTOS) == len(set(PHOTOS)) == 15


def test_needs_no_root_and_is_neither_generated_nor_cached(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="photo_patches", image_size=32, val_size=8, train_size=16, cache_dir=tmp_path)
    train_set, val_set = build_datasets(cfg)
    assert (len(train_set), len(val_set)) == (16, 8)
    assert build_latent_sample(cfg) is None  # the validation set is the sample, as for folder datasets
    assert not any(tmp_path.iterdir())  # in memory: nothing written to data.cache_dir


@pytest.mark.parametrize("size", [32, 64])
def test_validation_patches_never_share_a_pixel_with_training_patches(photos, size: int) -> None:
    train_set, val_set = PhotoPatches(photos, "train", size), PhotoPatches(photos, "val", size)
    for index, photo in enumerate(photos):
        train_rows = train_set.positions[train_set.positions[:, 0] == index, 1]
        val_rows = val_set.positions[val_set.positions[:, 0] == index, 1]
        assert len(train_rows) and len(val_rows), f"{PHOTOS[index]} gives no patch at {size} px"
        # every training patch ends at or above the first row of every validation patch
        assert int(train_rows.max()) + size <= int(val_rows.min())
        assert int(val_rows.max()) + size <= photo.shape[1]
    # validation patches tile their region: no two of them overlap either
    corners = {tuple(p) for p in val_set.positions.tolist()}
    assert len(corners) == len(val_set)
    assert all(left % size == 0 for _, _, left in corners)


def test_items_are_the_photograph_pixels_scaled_to_minus_one_one_and_fixed_by_index(photos) -> None:
    patches = PhotoPatches(photos, "train", 32)
    again = PhotoPatches(load_photos(), "train", 32)
    for index in (0, 1, len(patches) // 2, len(patches) - 1):
        image, factors = patches[index]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and factors.numel() == 0
        assert -1.0 <= image.min() and image.max() <= 1.0
        assert torch.equal(image, again[index][0])
        photo, top, left = patches.positions[index].tolist()
        with Image.open(photo_folder() / PHOTOS[photo]) as opened:
            crop = opened.convert("RGB").crop((left, top, left + 32, top + 32))
        expected = torch.from_numpy(np.asarray(crop, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
        assert torch.equal(image, expected)


def test_grey_photographs_are_repeated_into_three_channels(photos) -> None:
    grass = photos[PHOTOS.index("grass.png")]
    assert grass.shape[0] == 3 and torch.equal(grass[0], grass[1]) and torch.equal(grass[1], grass[2])


def test_caps_draw_the_same_patches_for_every_trial_of_a_split_seed() -> None:
    cfg = DataConfig(dataset="photo_patches", image_size=32, val_size=16, train_size=32)
    first, second = build_datasets(cfg), build_datasets(cfg)
    other = build_datasets(cfg.model_copy(update={"split_seed": 1}))
    assert first[1].indices == second[1].indices and first[0].indices == second[0].indices
    assert first[1].indices != other[1].indices


def test_a_patch_larger_than_the_photographs_is_a_one_line_error_naming_the_key() -> None:
    with pytest.raises(RaysweepError, match=r"^data.image_size 1024 leaves no train patch of photo_patches .*lower"):
        build_datasets(DataConfig(dataset="photo_patches", image_size=1024))


def test_missing_scikit_image_is_one_line_naming_the_extra(monkeypatch) -> None:
    # A None entry in sys.modules is how Python marks a module as not importable: find_spec says None.
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(RaysweepError) as caught:
        build_datasets(DataConfig(dataset="photo_patches", image_size=32))
    message = str(caught.value)
    assert "\n" not in message and "pip install 'raysweep[photos]'" in message and "photo_patches" in message


def test_reads_the_files_without_importing_scikit_image() -> None:
    """Nothing of skimage runs (its data functions fetch through pooch): the files are read with PIL."""
    code = (
        "import json, sys\n"
        "from raysweep.config import DataConfig\n"
        "from raysweep.data import build_datasets\n"
        "train, val = build_datasets(DataConfig(dataset='photo_patches', image_size=64))\n"
        "print(json.dumps([len(train), len(val), 'skimage' in sys.modules, 'pooch' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    train_size, val_size, skimage_loaded, pooch_loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert train_size > 1000 and val_size == 233 and not skimage_loaded and not pooch_loaded


def test_a_tiny_vae_trains_on_photo_patches(tmp_path: Path, make_trial) -> None:
    cfg = make_trial(["data.dataset=photo_patches", "data.val_size=32", "data.train_size=256",
                      "train.max_steps=20", "train.val_every=10"])
    final = train(cfg, tmp_path, progress=False)
    assert final["status"] == "finished" and final["step"] == 20
    assert "mig" not in final or final["mig"] is None  # photographs have no ground-truth factors
