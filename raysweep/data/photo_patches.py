"""Photo patches: square patches of the photographs that the scikit-image wheel ships, the first
dataset here with natural-image statistics that needs no download and trains on a CPU.

Why it exists: XYSquares is generated and adversarial by design, and the folder datasets need a
download and a GPU to be worth training on. These fifteen photographs (an astronaut, a cat, coffee,
a rocket, a motorcycle, the Hubble deep field, a retina, textures of brick, grass and gravel, and
others) sit inside every scikit-image wheel under ``skimage/data``; they are read from there with
PIL, never through ``skimage.data``'s functions (whose fetcher could reach for the network for
files that are not in the wheel). Grey photographs are repeated into three channels.

The patches: ``data.image_size`` pixels square, at native resolution (no resize), cut at fixed
positions, so item ``i`` is always the same pixels. Each photograph is split by region: its bottom
``VALIDATION_FRACTION`` of rows (at least one patch high) is the validation region, the rest the
training region, so no validation patch shares a pixel with a training patch. Training patches lie
on a grid of stride ``image_size // 2`` (neighbours overlap by half, more distinct crops of few
photographs); validation patches tile their region without overlap. This is an official split:
``data.val_size`` and ``data.train_size`` cap it with seeded random subsets (``data.split_seed``).
Pixels are scaled to [-1, 1] like every other dataset. Items are ``(image, factors)`` with
factors empty (photographs have no ground-truth factors).

Needs the ``photos`` extra (``pip install 'raysweep[photos]'``), which installs scikit-image.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from raysweep.config import DataConfig
from raysweep.data.folders import pixels_to_float
from raysweep.errors import RaysweepError
from raysweep.registry import DATASETS

__all__ = ["PHOTOS", "VALIDATION_FRACTION", "PhotoPatches", "build_photo_patches", "load_photos", "photo_folder"]

# The photographs among skimage/data's files (scikit-image 0.26), in a fixed order. Left out: the
# synthetic images (chessboard, color, logo, phantom, horse, text, clock_motion), motorcycle_right
# (the other view of motorcycle_left's stereo pair), the scanned page and the tiny or packed files
# (microaneurysms, lfw_subset, multipage).
PHOTOS: tuple[str, ...] = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png", "coins.png",
    "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
    "retina.jpg", "rocket.jpg",
)
VALIDATION_FRACTION = 0.2
"""Share of each photograph's rows (at the bottom) that only validation patches are cut from."""

_EMPTY_FACTORS = torch.zeros(0, dtype=torch.long)


def photo_folder() -> Path:
    """The ``skimage/data`` folder of the installed scikit-image, found without importing it."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RaysweepError(
            "data.dataset photo_patches needs scikit-image, which is not installed: pip install 'raysweep[photos]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_photos(folder: Path | None = None) -> list[torch.Tensor]:
    """Every photograph of :data:`PHOTOS` as uint8 pixels (3, height, width), in that order."""
    folder = photo_folder() if folder is None else folder
    photos = []
    for name in PHOTOS:
        path = folder / name
        if not path.is_file():
            raise RaysweepError(
                f"data.dataset photo_patches: {path} is missing from the installed scikit-image: "
                "reinstall it with pip install 'raysweep[photos]'"
            )
        with Image.open(path) as opened:
            pixels = torch.frombuffer(bytearray(opened.convert("RGB").tobytes()), dtype=torch.uint8)
            photos.append(pixels.view(opened.size[1], opened.size[0], 3).permute(2, 0, 1).contiguous())
    return photos


def _positions(photo: int, rows: range, width: int, size: int, stride: int) -> list[tuple[int, int, int]]:
    """Top-left corners (photo, row, column) of the patches of side `size` inside `rows` x width."""
    return [
        (photo, top, left)
        for top in range(rows.start, rows.stop - size + 1, stride)
        for left in range(0, width - size + 1, stride)
    ]


class PhotoPatches(Dataset):
    """The training or the validation patches of the photographs.

    Args:
        photos: uint8 photographs (3, height, width), as :func:`load_photos` gives them.
        split: ``"train"`` or ``"val"``.
        image_size: patch side in pixels (``data.image_size``).

    ``positions`` is an (N, 3) LongTensor: item i is photo ``positions[i, 0]`` cut at row
    ``positions[i, 1]``, column ``positions[i, 2]``.
    """

    channels: int = 3
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()

    def __init__(self, photos: list[torch.Tensor], split: str, image_size: int) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.photos, self.split, self.image_size = photos, split, image_size
        found: list[tuple[int, int, int]] = []
        for index, photo in enumerate(photos):
            height, width = photo.shape[1:]
            held_out = max(image_size, math.ceil(VALIDATION_FRACTION * height))
            if split == "train":
                found += _positions(index, range(0, height - held_out), width, image_size, max(1, image_size // 2))
            else:
                found += _positions(index, range(height - held_out, height), width, image_size, image_size)
        if not found:
            heights = sorted(photo.shape[1] for photo in photos)
            raise RaysweepError(
                f"data.image_size {image_size} leaves no {split} patch of photo_patches (photographs are {heights[0]} "
                f"to {heights[-1]} pixels high): lower data.image_size (e.g. 32 or 64)"
            )
        self.positions = torch.tensor(found, dtype=torch.long)

    def __len__(self) -> int:
        """Number of patches."""
        return len(self.positions)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, factors)``: float32 (3, image_size, image_size) in [-1, 1], factors shape (0,)."""
        photo, top, left = self.positions[index].tolist()
        size = self.image_size
        patch = self.photos[photo][:, top : top + size, left : left + size]
        return pixels_to_float(patch), _EMPTY_FACTORS.clone()


@DATASETS.builds("photo_patches")
def build_photo_patches(cfg: DataConfig) -> tuple[PhotoPatches, PhotoPatches]:
    """The training and validation patches at ``data.image_size`` (the photographs decoded once)."""
    photos = load_photos()
    return PhotoPatches(photos, "train", cfg.image_size), PhotoPatches(photos, "val", cfg.image_size)
