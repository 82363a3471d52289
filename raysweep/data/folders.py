"""Image datasets read from local folders: any image folder, CelebA, Tiny-ImageNet.

Nothing is downloaded: the user points ``data.root`` at a folder they provide, and every problem
with it (missing, empty, missing the expected subfolder, an unreadable image) is a one-line
:class:`~raysweep.errors.RaysweepError` naming the path and what belongs there.

Every image goes through the paper's preprocessing (section 4): loaded with PIL, converted to
RGB, centre-cropped to the largest square, resized to ``image_size`` with an antialiased bicubic
filter, and scaled to [-1, 1]. Horizontal-flip augmentation is not done here: the training loop
flips whole batches with a step-seeded generator so that a resumed run is bit-identical.

Items are ``(image, factors)`` with ``image`` float32 (3, image_size, image_size) and
``factors`` an empty LongTensor (these datasets have no ground-truth factors).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from raysweep.config import DataConfig
from raysweep.data.splits import partition_indices
from raysweep.errors import RaysweepError
from raysweep.registry import DATASETS

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
"""File name endings (case-insensitive) read as images."""

# Proportions of the official CelebA partition (162,770 / 19,867 / 19,962 of 202,599 images),
# reused by the seeded fallback split so both give sets of the usual sizes.
_CELEBA_FRACTIONS: tuple[float, float] = (162_770 / 202_599, 19_867 / 202_599)
_CELEBA_PARTITION_CODES = {"train": 0, "val": 1, "test": 2}
_EMPTY_FACTORS = torch.zeros(0, dtype=torch.long)


PREPROCESSING_VERSION = "rgb-centre-crop-bicubic-antialias-1"
"""Names what :func:`decode_image` does; prepared caches (:mod:`raysweep.data.cache`) are keyed by
it, so changing the preprocessing must change this string or old caches would be trusted."""


def pixels_to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1] (``x / 127.5 - 1``), the one conversion both the decode
    path and the prepared cache use, so both give bit-identical images. The two float32 operations
    run in place on the converted tensor: the same results without two temporary copies (the
    conversion is most of the prepared cache's cost per batch)."""
    return pixels.to(torch.float32).div_(127.5).sub_(1.0)


def decode_image(path: Path, image_size: int) -> torch.Tensor:
    """Load one image file as uint8 pixels (3, image_size, image_size), before scaling to [-1, 1].

    RGB conversion, centre crop to the largest square (``min(width, height)`` pixels), then an
    antialiased bicubic resize to ``image_size`` pixels. Raises RaysweepError naming the file
    when it cannot be read or decoded.
    """
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")  # forces the full decode, so truncated files fail here
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise RaysweepError(
            f"image {path} cannot be read ({type(error).__name__}: {error}): "
            "replace or delete the file, then restart"
        ) from error
    side = min(image.size)
    image = F.center_crop(image, [side, side])
    image = F.resize(image, [image_size, image_size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return F.pil_to_tensor(image)  # uint8 (3, H, W)


def load_image(path: Path, image_size: int) -> torch.Tensor:
    """Load one image file as a float32 tensor (3, image_size, image_size) in [-1, 1]: the pixels of
    :func:`decode_image` through :func:`pixels_to_float`."""
    return pixels_to_float(decode_image(path, image_size))


def _check_image_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise RaysweepError(f"data.image_size={image_size!r} is invalid: give a whole number of pixels >= 1")
    return image_size


def _check_folder(path: Path, what: str, fix: str) -> Path:
    """Return ``path`` if it is a folder, else raise RaysweepError saying what belongs there."""
    if not path.exists():
        raise RaysweepError(f"{what} {path} does not exist: {fix}")
    if not path.is_dir():
        raise RaysweepError(f"{what} {path} is not a folder: {fix}")
    return path


def _list_images(folder: Path, recursive: bool) -> list[Path]:
    """Image files under ``folder``, sorted by their path relative to it (same order everywhere)."""
    found: list[Path] = []
    if recursive:
        for directory, subdirs, files in os.walk(folder, followlinks=True):
            subdirs.sort()
            found.extend(Path(directory, name) for name in files if name.lower().endswith(IMAGE_EXTENSIONS))
    else:
        with os.scandir(folder) as entries:
            found.extend(
                Path(entry.path)
                for entry in entries
                if entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file()
            )
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


class _FileImages(Dataset):
    """Shared behaviour: a sorted list of files, RGB, no factors."""

    channels: int = 3
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()

    def __init__(self, paths: list[Path], image_size: int) -> None:
        self.paths: list[Path] = paths
        self.image_size: int = image_size

    def __len__(self) -> int:
        """Number of image files."""
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, factors)``: image float32 (3, image_size, image_size) in [-1, 1], factors shape (0,)."""
        return load_image(self.paths[index], self.image_size), _EMPTY_FACTORS.clone()


class ImageFolderDataset(_FileImages):
    """Every image under ``root``, found recursively, in sorted path order.

    Args:
        root: the folder; files ending in .jpg .jpeg .png .bmp .webp (any case) at any depth
            are read, everything else is ignored.
        image_size: output side in pixels.

    There is no built-in split: hold out images with
    :func:`raysweep.data.splits.train_val_split` and :class:`raysweep.data.splits.Subset`.
    """

    def __init__(self, root: str | os.PathLike[str], *, image_size: int = 64) -> None:
        """List the images (they are decoded lazily, in ``__getitem__``)."""
        self.root = _check_folder(
            Path(root), "data.root", "point data.root at an existing folder of images"
        )
        image_size = _check_image_size(image_size)
        paths = _list_images(self.root, recursive=True)
        if not paths:
            raise RaysweepError(
                f"data.root {self.root} has no images ({' '.join(IMAGE_EXTENSIONS)}) in it or its subfolders: "
                "put image files there or point data.root at the folder that holds them"
            )
        super().__init__(paths, image_size)

    def __repr__(self) -> str:
        return f"ImageFolderDataset({str(self.root)!r}, {len(self)} images, image_size={self.image_size})"


def _read_celeba_partition(path: Path) -> dict[str, int]:
    """Parse CelebA's partition file: ``000001.jpg 0`` lines (.txt) or ``image_id,partition`` (.csv)."""
    partition: dict[str, int] = {}
    separator = "," if path.suffix.lower() == ".csv" else None
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.strip().split(separator)
            if not fields or fields == [""]:
                continue
            if number == 1 and fields[0] == "image_id":  # the Kaggle CSV's header
                continue
            if len(fields) != 2 or fields[1].strip() not in ("0", "1", "2"):
                raise RaysweepError(
                    f"CelebA partition file {path} line {number} is {line.strip()!r}, not '<image> <0|1|2>': "
                    "replace it with the official list_eval_partition.txt or delete it for a seeded split"
                )
            partition[fields[0].strip()] = int(fields[1])
    return partition


class CelebA(_FileImages):
    """CelebA's aligned face images (``img_align_celeba/``), for the paper's CelebA runs.

    Args:
        root: folder holding ``img_align_celeba/`` (the aligned JPEGs, as extracted from
            ``img_align_celeba.zip``; the Kaggle copy's doubled ``img_align_celeba/img_align_celeba/``
            is accepted too) and, optionally, ``list_eval_partition.txt`` (or the Kaggle
            ``list_eval_partition.csv``).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        image_size: output side in pixels (the paper crops 178x218 faces to 178x178 first).
        split_seed: seed of the fallback split, used only without a partition file.

    With a partition file its official split is used (0 train, 1 val, 2 test). Without one the
    images are split at random with ``split_seed`` in the official proportions
    (about 80.3% / 9.8% / 9.9%), the same on every machine.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split: Literal["train", "val", "test", "all"] = "train",
        image_size: int = 64,
        split_seed: int = 0,
    ) -> None:
        """List the split's images (they are decoded lazily, in ``__getitem__``)."""
        image_size = _check_image_size(image_size)
        if split not in ("train", "val", "test", "all"):
            raise RaysweepError(f"CelebA split={split!r} is invalid: give 'train', 'val', 'test' or 'all'")
        self.root = _check_folder(
            Path(root), "data.root", "download CelebA and point data.root at the folder holding img_align_celeba/"
        )
        self.split = split
        folder = self.root / "img_align_celeba"
        if not folder.is_dir():
            raise RaysweepError(
                f"data.root {self.root} has no img_align_celeba/ folder: download CelebA's aligned images "
                f"(img_align_celeba.zip) and extract them to {folder}/"
            )
        images = _list_images(folder, recursive=False)
        if not images and (folder / "img_align_celeba").is_dir():
            folder = folder / "img_align_celeba"  # the Kaggle archive nests the folder twice
            images = _list_images(folder, recursive=False)
        if not images:
            raise RaysweepError(
                f"CelebA folder {folder} has no images: extract img_align_celeba.zip there "
                "(000001.jpg ... 202599.jpg)"
            )
        self.partition_file: Path | None = next(
            (p for p in (self.root / "list_eval_partition.txt", self.root / "list_eval_partition.csv") if p.is_file()),
            None,
        )
        if split == "all":
            selected = images
        elif self.partition_file is not None:
            selected = self._official_split(images, folder, split)
        else:
            n = len(images)
            sizes = [round(fraction * n) for fraction in _CELEBA_FRACTIONS]
            sizes.append(n - sum(sizes))
            parts = dict(zip(("train", "val", "test"), partition_indices(n, sizes, split_seed), strict=True))
            selected = [images[i] for i in parts[split]]
        if not selected:
            raise RaysweepError(
                f"CelebA split {split!r} under {self.root} has no images: check {self.partition_file} "
                "or use more images"
            )
        super().__init__(selected, image_size)

    def _official_split(self, images: list[Path], folder: Path, split: str) -> list[Path]:
        assert self.partition_file is not None
        partition = _read_celeba_partition(self.partition_file)
        on_disk = {path.name: path for path in images}
        wanted = sorted(name for name, code in partition.items() if code == _CELEBA_PARTITION_CODES[split])
        missing = [name for name in wanted if name not in on_disk]
        if missing:
            raise RaysweepError(
                f"{self.partition_file} lists {len(missing)} {split} images missing from {folder} "
                f"(first: {missing[0]}): extract the full img_align_celeba.zip there, "
                "or delete the partition file for a seeded split of the images present"
            )
        return [on_disk[name] for name in wanted]

    def __repr__(self) -> str:
        return f"CelebA({str(self.root)!r}, split={self.split!r}, {len(self)} images, image_size={self.image_size})"


class TinyImageNet(_FileImages):
    """Tiny-ImageNet-200 (64x64 images of 200 classes), in its standard extracted layout.

    Args:
        root: the extracted ``tiny-imagenet-200/`` folder: ``train/<wnid>/images/*.JPEG`` and
            ``val/images/*.JPEG`` with ``val/val_annotations.txt``.
        split: ``"train"`` reads ``train/``, ``"val"`` reads ``val/images/``.
        image_size: output side in pixels.

    Class labels are not ground-truth factors, so items carry empty factors; they are kept in
    :attr:`labels` (index into :attr:`classes`, -1 where a val image has no annotation).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        split: Literal["train", "val"] = "train",
        image_size: int = 64,
    ) -> None:
        """List the split's images (they are decoded lazily, in ``__getitem__``)."""
        image_size = _check_image_size(image_size)
        if split not in ("train", "val"):
            raise RaysweepError(f"TinyImageNet split={split!r} is invalid: give 'train' or 'val'")
        self.root = _check_folder(
            Path(root), "data.root", "download tiny-imagenet-200.zip, extract it and point data.root at it"
        )
        self.split = split
        train = self.root / "train"
        if split == "train" and not train.is_dir():
            raise RaysweepError(
                f"data.root {self.root} has no train/ folder: point data.root at the extracted "
                "tiny-imagenet-200/ folder (it holds train/<wnid>/images/ and val/images/)"
            )
        wnid_dirs = sorted(p for p in train.iterdir() if (p / "images").is_dir()) if train.is_dir() else []
        if split == "train":
            self.classes: tuple[str, ...] = tuple(p.name for p in wnid_dirs)
            paths: list[Path] = []
            labels: list[int] = []
            for label, wnid_dir in enumerate(wnid_dirs):
                found = _list_images(wnid_dir / "images", recursive=False)
                paths.extend(found)
                labels.extend([label] * len(found))
            where = f"{train}/<wnid>/images/"
        else:
            images = self.root / "val" / "images"
            if not images.is_dir():
                raise RaysweepError(
                    f"data.root {self.root} has no val/images/ folder: extract the full tiny-imagenet-200.zip "
                    f"so that {images}/ holds the validation JPEGs"
                )
            paths = _list_images(images, recursive=False)
            annotations = self._read_val_annotations(self.root / "val" / "val_annotations.txt")
            # Same class order as the train split when train/ is there, so labels agree across splits.
            self.classes = tuple(p.name for p in wnid_dirs) or tuple(sorted(set(annotations.values())))
            index_of = {wnid: i for i, wnid in enumerate(self.classes)}
            labels = [index_of.get(annotations.get(p.name, ""), -1) for p in paths]
            where = f"{images}/"
        if not paths:
            raise RaysweepError(
                f"Tiny-ImageNet {split} split has no images in {where}: extract the full tiny-imagenet-200.zip "
                f"into {self.root}"
            )
        self.labels: list[int] = labels
        super().__init__(paths, image_size)

    @staticmethod
    def _read_val_annotations(path: Path) -> dict[str, str]:
        """File name -> wnid from ``val_annotations.txt`` (tab-separated); empty when absent."""
        if not path.is_file():
            return {}
        annotations: dict[str, str] = {}
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                fields = line.split("\t")
                if len(fields) >= 2:
                    annotations[fields[0].strip()] = fields[1].strip()
        return annotations

    def __repr__(self) -> str:
        return f"TinyImageNet({str(self.root)!r}, split={self.split!r}, {len(self)} images, image_size={self.image_size})"


# ------------------------------------------------------------------------------- registrations
# A folder with an official split gives (train, val); any other folder gives one pool that the
# caller splits with data.val_size and data.split_seed (raysweep.data.build_datasets).
@DATASETS.builds("image_folder")
def build_image_folder(cfg: DataConfig) -> ImageFolderDataset:
    """Every image under ``data.root``, one pool."""
    return ImageFolderDataset(cfg.root, image_size=cfg.image_size)  # type: ignore[arg-type]


@DATASETS.builds("celeba")
def build_celeba(cfg: DataConfig) -> tuple[CelebA, CelebA]:
    """CelebA's training and validation partitions."""
    size, seed = cfg.image_size, cfg.split_seed
    return (CelebA(cfg.root, split="train", image_size=size, split_seed=seed),  # type: ignore[arg-type]
            CelebA(cfg.root, split="val", image_size=size, split_seed=seed))  # type: ignore[arg-type]


@DATASETS.builds("tiny_imagenet")
def build_tiny_imagenet(cfg: DataConfig) -> tuple[TinyImageNet, TinyImageNet]:
    """Tiny-ImageNet's train and val folders."""
    return (TinyImageNet(cfg.root, split="train", image_size=cfg.image_size),  # type: ignore[arg-type]
            TinyImageNet(cfg.root, split="val", image_size=cfg.image_size))  # type: ignore[arg-type]
