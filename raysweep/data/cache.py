"""Prepared caches of folder datasets: every image decoded, cropped and resized once per sweep.

Decoding a JPEG, centre-cropping it and resizing it with an antialiased bicubic filter costs about
2 ms per CelebA image on one core; gathering the same pixels from an array in memory costs a few
microseconds. Without a cache a sweep pays the decode on every epoch of every trial. With one, the
first trial on a node (or ``raysweep prepare`` ahead of the job) runs :func:`~raysweep.data.folders.decode_image`
once per file and stores the uint8 pixels; every trial then reads them through a memory map, so
all trials of a node share one copy in the page cache.

Layout, in ``data.cache_dir`` (default ``$XDG_CACHE_HOME/raysweep`` or ``~/.cache/raysweep``):

- ``NAME.npy``: a NumPy array file, uint8 of shape (N, 3, S, S), images in the dataset's order.
  ``.npy`` is memory-mappable by ``numpy.load(mmap_mode="r")`` with no extra dependency, carries its
  own shape and dtype, and each image is one contiguous block, so a batch is N small reads.
- ``NAME.json``: the manifest, written last. A cache is trusted only when its manifest exists,
  names the same key and describes the array file's exact size and shape.
- ``NAME.lock``: the :class:`filelock.FileLock` that makes concurrent trials build a missing cache
  once: the first takes the lock and builds, the others wait and then find it valid.

``NAME`` is ``<label>-<S>px-<key>``, the key a SHA-256 over every file's absolute path, size and
modification time, ``image_size``, :data:`~raysweep.data.folders.PREPROCESSING_VERSION` and the
Pillow and torchvision versions (which do the decode and resize). A changed, added or removed file,
another size or another preprocessing gives another name: a stale cache is never read, only left
behind (delete the folder's files to reclaim the space).

Writes are atomic: the array is written to a temporary file, flushed and fsynced, moved into place
with ``os.replace``, and only then is the manifest written the same way. A crash at any point
leaves either no manifest (the cache is rebuilt by the next trial) or a complete cache.

The cached images are bit-identical to the decoded ones: both are the same uint8 pixels turned
into floats by :func:`~raysweep.data.folders.pixels_to_float`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
import torchvision
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset

from raysweep.data.folders import PREPROCESSING_VERSION, _FileImages, decode_image, pixels_to_float
from raysweep.errors import RaysweepError

CACHE_FORMAT = 1
"""Version of the manifest and array layout; a different one is never trusted."""

_EMPTY_FACTORS = torch.zeros(0, dtype=torch.long)
_DECODE_BATCH = 32  # images per decode batch while building (a progress-bar tick, a worker's chunk)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/raysweep``, else ``~/.cache/raysweep``: the per-user cache folder of this node."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base and os.path.isabs(base) else Path.home() / ".cache") / "raysweep"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """``data.cache_dir`` as a folder path: the given one (``~`` expanded) or :func:`default_cache_dir`."""
    return default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()


@dataclass(frozen=True)
class PreparedCache:
    """One prepared cache on disk, and whether this call built it."""

    array_path: Path
    manifest_path: Path
    count: int
    image_size: int
    nbytes: int
    built: bool  # False: it was already there and valid
    seconds: float  # building it (0.0 when it was already there)

    @property
    def megabytes(self) -> float:
        return self.nbytes / 1e6


def cache_key(paths: Sequence[Path], image_size: int) -> str:
    """SHA-256 (hex) of what decides a cache's content: every file's absolute path, size and
    mtime (in order), ``image_size`` and the preprocessing with the library versions doing it."""
    digest = hashlib.sha256()
    header = {
        "format": CACHE_FORMAT, "preprocessing": PREPROCESSING_VERSION, "pillow": PIL.__version__,
        "torchvision": torchvision.__version__, "image_size": image_size, "count": len(paths),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise RaysweepError(
                f"image {path} cannot be read ({type(error).__name__}: {error}): restore the file or "
                "remove it from the dataset folder, then restart"
            ) from None
        digest.update(f"\n{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _cache_name(label: str, image_size: int, key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label) or "images"
    return f"{safe}-{image_size}px-{key[:24]}"


def _read_valid(manifest_path: Path, array_path: Path, key: str, shape: tuple[int, ...]) -> dict[str, Any] | None:
    """The manifest when it vouches for a complete array of this key and shape, else None."""
    try:
        manifest = json.loads(manifest_path.read_text())
        if (manifest.get("format"), manifest.get("key"), tuple(manifest.get("shape", ()))) != (CACHE_FORMAT, key, shape):
            return None
        if os.path.getsize(array_path) != manifest.get("bytes"):
            return None
        array = np.load(array_path, mmap_mode="r")
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # absent, cut short, or not ours: not trusted
    if array.shape != shape or array.dtype != np.uint8:
        return None
    return manifest


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
    try:
        with open(temporary, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_path(path.parent)


class _DecodeFiles(Dataset):
    """The files to prepare, as uint8 pixels (so a DataLoader can decode them in worker processes)."""

    def __init__(self, paths: Sequence[Path], image_size: int) -> None:
        self.paths = list(paths)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | str:
        # A bad file's one-line message travels back as text: an exception raised in a DataLoader
        # worker would come back wrapped in a multi-line traceback.
        try:
            return decode_image(self.paths[index], self.image_size)
        except RaysweepError as error:
            return str(error)


def _stack_or_error(items: list[torch.Tensor | str]) -> torch.Tensor | str:
    """Collate of :class:`_DecodeFiles`: the batch of pixels, or the first bad file's error message."""
    for item in items:
        if isinstance(item, str):
            return item
    return torch.stack(items)  # type: ignore[arg-type]


def _unwritable(cache_dir: Path, error: OSError) -> RaysweepError:
    return RaysweepError(
        f"data.cache_dir {cache_dir} is not writable ({type(error).__name__}: {error}): point data.cache_dir at a "
        "writable folder, or set data.cache=false to decode the images on every read"
    )


def _build(
    paths: Sequence[Path], image_size: int, array_path: Path, manifest_path: Path, key: str, label: str,
    show_progress: bool, workers: int,
) -> tuple[int, float]:
    """Decode every file into a new array file, then write the manifest. Returns (bytes, seconds)."""
    started = time.perf_counter()
    cache_dir = array_path.parent
    shape = (len(paths), 3, image_size, image_size)
    needed = int(np.prod(shape)) + 4096
    free = shutil.disk_usage(cache_dir).free
    if free < needed:
        raise RaysweepError(
            f"data.cache_dir {cache_dir} has {free / 1e9:.2f} GB free, the {label} cache needs {needed / 1e9:.2f} GB: "
            "free some space, point data.cache_dir at a larger disk, or set data.cache=false"
        )
    # An old manifest must never vouch for the array being rewritten; leftovers of crashed builds go too
    # (nobody else builds this name while we hold its lock).
    manifest_path.unlink(missing_ok=True)
    for leftover in cache_dir.glob(f".{array_path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
    temporary = cache_dir / f".{array_path.name}.{socket.gethostname()}-{os.getpid()}.tmp"
    bar = None
    try:
        array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
        if show_progress:
            from tqdm import tqdm

            bar = tqdm(total=len(paths), desc=f"prepare {label} {image_size}px", unit="img", file=sys.stderr,
                       dynamic_ncols=True)
        loader = DataLoader(_DecodeFiles(paths, image_size), batch_size=_DECODE_BATCH, num_workers=workers,
                            collate_fn=_stack_or_error)
        start = 0
        for batch in loader:
            if isinstance(batch, str):
                raise RaysweepError(batch)
            array[start : start + len(batch)] = batch.numpy()
            start += len(batch)
            if bar is not None:
                bar.update(len(batch))
        array.flush()
        del array
        _fsync_path(temporary)
        os.replace(temporary, array_path)
        _fsync_path(cache_dir)
    finally:
        if bar is not None:
            bar.close()
        temporary.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    nbytes = os.path.getsize(array_path)
    manifest = {
        "format": CACHE_FORMAT, "key": key, "label": label, "image_size": image_size, "count": len(paths),
        "shape": list(shape), "dtype": "uint8", "bytes": nbytes, "preprocessing": PREPROCESSING_VERSION,
        "pillow": PIL.__version__, "torchvision": torchvision.__version__,
        "first_file": str(os.path.abspath(paths[0])) if paths else None,
        "built_by": f"{socket.gethostname()}:{os.getpid()}", "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(seconds, 3),
    }
    _write_atomically(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return nbytes, seconds


def prepare_cache(
    paths: Sequence[Path],
    image_size: int,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    label: str = "images",
    progress: bool | None = None,
    workers: int = 0,
) -> PreparedCache:
    """The prepared cache of ``paths`` at ``image_size``: reused when a valid one exists, else built
    under the cache's file lock (one builder however many processes ask at once).

    Args:
        paths: the image files, in the order the dataset indexes them.
        image_size: output side in pixels.
        cache_dir: ``data.cache_dir`` (None: :func:`default_cache_dir`).
        label: readable start of the file names (e.g. ``celeba-train``).
        progress: a tqdm bar on stderr while building (default: when stderr is a terminal).
        workers: DataLoader processes decoding while building (0: this process).
    """
    folder = resolve_cache_dir(cache_dir)
    key = cache_key(paths, image_size)
    name = _cache_name(label, image_size, key)
    array_path, manifest_path = folder / f"{name}.npy", folder / f"{name}.json"
    shape = (len(paths), 3, image_size, image_size)

    def found(manifest: dict[str, Any]) -> PreparedCache:
        return PreparedCache(array_path, manifest_path, len(paths), image_size, int(manifest["bytes"]), False, 0.0)

    manifest = _read_valid(manifest_path, array_path, key, shape)
    if manifest is not None:  # the common case: no lock, so a read-only shared cache folder works
        return found(manifest)
    if folder.exists() and not folder.is_dir():
        raise RaysweepError(f"data.cache_dir {folder} is a file, not a folder: point data.cache_dir at a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f"{name}.lock"))
        with lock:
            manifest = _read_valid(manifest_path, array_path, key, shape)
            if manifest is not None:  # another process built it while we waited
                return found(manifest)
            show = sys.stderr.isatty() if progress is None else progress
            nbytes, seconds = _build(paths, image_size, array_path, manifest_path, key, label, show, workers)
    except OSError as error:  # cannot create the folder, the lock or the files
        raise _unwritable(folder, error) from None
    return PreparedCache(array_path, manifest_path, len(paths), image_size, nbytes, True, seconds)


class CachedImages(Dataset):
    """A folder dataset's images read from its prepared cache, item for item the same as decoding.

    Items are ``(image, factors)`` like :class:`~raysweep.data.folders.ImageFolderDataset`'s, and it
    exposes the same description (``channels``, ``image_size``, ``factor_names``, ``factor_sizes``)
    and ``paths``. ``__getitems__`` gathers a whole batch from the memory map in one indexing
    operation (the DataLoader calls it with a batch sampler). The map is opened lazily in each
    process, never pickled, so DataLoader workers started by spawn do not copy the array.
    """

    channels: int = 3
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()

    def __init__(self, prepared: PreparedCache, paths: Sequence[Path]) -> None:
        """Read the images of ``prepared`` (whose files, in order, are ``paths``)."""
        self.prepared = prepared
        self.paths: list[Path] = list(paths)
        self.image_size: int = prepared.image_size
        self._pixels: np.ndarray | None = None

    def _array(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = np.load(self.prepared.array_path, mmap_mode="r")
        return self._pixels

    def __len__(self) -> int:
        """Number of images."""
        return self.prepared.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, factors)``: image float32 (3, image_size, image_size) in [-1, 1], factors shape (0,)."""
        pixels = torch.from_numpy(np.array(self._array()[index]))
        return pixels_to_float(pixels), _EMPTY_FACTORS.clone()

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The items at ``indices``, gathered from the map in one read (what a batch sampler asks for)."""
        images = pixels_to_float(torch.from_numpy(self._array()[np.asarray(indices, dtype=np.int64)]))
        return [(image, _EMPTY_FACTORS.clone()) for image in images]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pixels"] = None  # each process maps the file itself
        return state

    def __repr__(self) -> str:
        return f"CachedImages({str(self.prepared.array_path)!r}, {len(self)} images, image_size={self.image_size})"


class CachedBatches(Dataset):
    """Whole batches of a :class:`CachedImages`, each gathered from the map in one read, as uint8.

    Indexed by a list of indices (a batch sampler's), with DataLoader ``batch_size=None``: no
    per-image items and no collate copy. :func:`batch_images` turns a batch into the float images
    the loop trains on.
    """

    def __init__(self, images: CachedImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pixels, factors)``: uint8 (len(indices), 3, S, S) and an empty (len(indices), 0) LongTensor."""
        pixels = torch.from_numpy(self.images._array()[np.asarray(indices, dtype=np.int64)])
        return pixels, torch.zeros(len(indices), 0, dtype=torch.long)


def training_loader(dataset: Dataset, batch_sampler: Any, *, num_workers: int, pin_memory: bool) -> DataLoader:
    """The DataLoader the training loop reads ``dataset`` with, one batch per item of ``batch_sampler``.

    A prepared cache is read as whole uint8 batches (:class:`CachedBatches`) in this process,
    whatever ``num_workers`` says: gathering a batch from the map costs less than handing it over
    from a worker process (measured by ``benchmarks/data_loader.py``: about 10x more images per
    second at 64 px in process than through one worker). Other datasets are decoded by
    ``num_workers`` worker processes (0: this one) and collated per image.
    """
    if isinstance(dataset, CachedImages):
        return DataLoader(CachedBatches(dataset), sampler=batch_sampler, batch_size=None, num_workers=0,
                          pin_memory=pin_memory)
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=False)


def batch_images(batch: Any) -> torch.Tensor:
    """The float32 images in [-1, 1] of a :func:`training_loader` batch (uint8 pixels from a cache go
    through :func:`~raysweep.data.folders.pixels_to_float`, the decode path's own conversion)."""
    x = batch[0] if isinstance(batch, list | tuple) else batch
    return pixels_to_float(x) if x.dtype == torch.uint8 else x


def cache_dataset(
    dataset: Dataset,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    label: str = "images",
    progress: bool | None = None,
    workers: int = 0,
) -> CachedImages:
    """``dataset`` (a folder dataset, or a :class:`~torch.utils.data.Subset` of one) read from its
    prepared cache, built first when missing (see :func:`prepare_cache`). The cache holds exactly
    the dataset's files in its order, so item ``i`` is the same image either way."""
    if isinstance(dataset, torch.utils.data.Subset) and isinstance(dataset.dataset, _FileImages):
        base: _FileImages = dataset.dataset
        paths = [base.paths[i] for i in dataset.indices]
    elif isinstance(dataset, _FileImages):
        base, paths = dataset, list(dataset.paths)
    else:
        raise TypeError(f"only folder datasets (or subsets of one) have a prepared cache, not {type(dataset).__name__}")
    prepared = prepare_cache(paths, base.image_size, cache_dir, label=label, progress=progress, workers=workers)
    return CachedImages(prepared, paths)
