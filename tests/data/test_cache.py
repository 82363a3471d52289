"""Prepared caches of folder datasets: bit-identical images, keys, atomic writes, one build under
concurrency, the ``data.cache`` keys, ``raysweep prepare``, and a training run cached or not."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_trial import tiny_trial_tree

from raysweep.cli import main
from raysweep.config import DataConfig, TrialConfig, trial_config_from_dict, validate_model
from raysweep.data import build_datasets
from raysweep.data.cache import (
    CachedImages,
    cache_dataset,
    default_cache_dir,
    prepare_cache,
    resolve_cache_dir,
)
from raysweep.data.folders import CelebA, ImageFolderDataset, TinyImageNet, load_image, pixels_to_float
from raysweep.errors import RaysweepError


def _images(root: Path, count: int, size: tuple[int, int] = (22, 27), seed: int = 0) -> list[Path]:
    """Noise images (JPEG and PNG alternately, CelebA's aspect ratio), so crop and resize matter."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        path = root / (f"{i:04d}.jpg" if i % 2 else f"{i:04d}.png")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _assert_same_items(cached: Any, decoded: Any) -> None:
    assert len(cached) == len(decoded)
    for i in range(len(decoded)):
        assert torch.equal(cached[i][0], decoded[i][0]), f"item {i} differs"
        assert cached[i][1].shape == (0,)


def test_cached_items_are_bit_identical_to_decoded_ones(tmp_path: Path) -> None:
    root = tmp_path / "images"
    _images(root, 30)
    cfg = DataConfig(dataset="image_folder", root=root, image_size=12, val_size=7, cache_dir=tmp_path / "cache")
    train_cached, val_cached = build_datasets(cfg)
    train_plain, val_plain = build_datasets(cfg.model_copy(update={"cache": False}))
    assert isinstance(train_cached, CachedImages) and not isinstance(train_plain, CachedImages)
    _assert_same_items(train_cached, train_plain)
    _assert_same_items(val_cached, val_plain)
    assert (train_cached.channels, train_cached.image_size, train_cached.factor_names) == (3, 12, ())
    assert train_cached.paths == [train_plain.dataset.paths[i] for i in train_plain.indices]
    # The batched read a batch sampler triggers returns the same images in the asked order.
    order = [5, 0, 22, 5, 13]
    batch = train_cached.__getitems__(order)
    assert all(torch.equal(batch[k][0], train_plain[i][0]) for k, i in enumerate(order))
    stored = np.load(train_cached.prepared.array_path, mmap_mode="r")
    assert stored.dtype == np.uint8 and stored.shape == (23, 3, 12, 12)
    assert torch.equal(train_cached[3][0], load_image(train_cached.paths[3], 12))


def test_the_float_conversion_is_the_documented_formula_bit_for_bit() -> None:
    """Every uint8 value: the cache and the decode path share this conversion, so it must stay
    exactly ``x / 127.5 - 1`` (the float32 bits, not just close)."""
    every = torch.arange(256, dtype=torch.uint8).view(1, 16, 16)
    formula = every.to(torch.float32) / 127.5 - 1.0
    assert torch.equal(pixels_to_float(every).view(torch.int32), formula.view(torch.int32))
    assert pixels_to_float(every)[0, 0, 0] == -1.0 and pixels_to_float(every)[0, 15, 15] == 1.0


def test_celeba_and_tiny_imagenet_splits_are_cached_per_split(tmp_path: Path) -> None:
    celeba = tmp_path / "celeba"
    _images(celeba / "img_align_celeba", 12)
    (celeba / "list_eval_partition.txt").write_text(
        "".join(f"{i:04d}.{'jpg' if i % 2 else 'png'} {(0, 0, 1, 2)[i % 4]}\n" for i in range(12)))
    tiny = tmp_path / "tiny"
    for wnid in ("n01", "n02"):
        _images(tiny / "train" / wnid / "images", 3, size=(16, 16), seed=len(wnid))
    _images(tiny / "val" / "images", 4, size=(16, 16), seed=9)
    cache = tmp_path / "cache"
    for dataset, expected in (("celeba", (CelebA, "train", "val")), ("tiny_imagenet", (TinyImageNet, "train", "val"))):
        cfg = DataConfig(dataset=dataset, root=celeba if dataset == "celeba" else tiny, image_size=8, cache_dir=cache)
        cached = build_datasets(cfg)
        cls, *splits = expected
        for dataset_cached, split in zip(cached, splits, strict=True):
            _assert_same_items(dataset_cached, cls(cfg.root, split=split, image_size=8))
            assert dataset_cached.prepared.array_path.name.startswith(f"{dataset}-{split}-8px-")


def test_a_valid_cache_is_reused_and_a_changed_file_or_size_gets_a_new_one(tmp_path: Path) -> None:
    paths = _images(tmp_path / "images", 6)
    cache = tmp_path / "cache"
    first = prepare_cache(paths, 8, cache, label="set")
    again = prepare_cache(paths, 8, cache, label="set")
    assert first.built and not again.built and again.array_path == first.array_path and again.seconds == 0.0
    manifest = json.loads(first.manifest_path.read_text())
    assert manifest["count"] == 6 and manifest["shape"] == [6, 3, 8, 8] and manifest["bytes"] == first.nbytes

    other_size = prepare_cache(paths, 10, cache, label="set")
    assert other_size.built and other_size.array_path != first.array_path

    Image.new("RGB", (22, 27), (1, 2, 3)).save(paths[2])  # new content, size and mtime
    os.utime(paths[2], ns=(1_000_000_000, 1_000_000_000))
    changed = prepare_cache(paths, 8, cache, label="set")
    assert changed.built and changed.array_path != first.array_path
    assert torch.equal(CachedImages(changed, paths)[2][0], load_image(paths[2], 8))

    fewer = prepare_cache(paths[:5], 8, cache, label="set")
    assert fewer.built and fewer.array_path not in {first.array_path, changed.array_path}


def test_what_a_crash_leaves_behind_is_never_trusted(tmp_path: Path) -> None:
    paths = _images(tmp_path / "images", 5)
    cache = tmp_path / "cache"
    good = prepare_cache(paths, 8, cache, label="set")
    expected = np.load(good.array_path).copy()

    # Crash after the array moved into place, before the manifest: rebuilt, not trusted.
    good.manifest_path.unlink()
    assert prepare_cache(paths, 8, cache, label="set").built

    # An array cut short under a manifest that describes the full one: rebuilt.
    with open(good.array_path, "r+b") as stream:
        stream.truncate(good.nbytes - 10)
    rebuilt = prepare_cache(paths, 8, cache, label="set")
    assert rebuilt.built and np.array_equal(np.load(rebuilt.array_path), expected)

    # A manifest of another key (or format) vouches for nothing.
    manifest = json.loads(good.manifest_path.read_text())
    good.manifest_path.write_text(json.dumps({**manifest, "key": "0" * 64}))
    assert prepare_cache(paths, 8, cache, label="set").built
    good.manifest_path.write_text("{ not json")
    assert prepare_cache(paths, 8, cache, label="set").built

    # A crashed builder's temporary file is cleared by the next build and never read.
    leftover = cache / f".{good.array_path.name}.deadhost-1.tmp"
    leftover.write_bytes(b"half an array")
    good.manifest_path.unlink()
    assert prepare_cache(paths, 8, cache, label="set").built
    assert not leftover.exists() and not list(cache.glob("*.tmp"))
    assert not prepare_cache(paths, 8, cache, label="set").built


def _build_after_barrier(paths: list[str], cache: str, barrier: Any, results: Any) -> None:
    """A process asking for the cache at the same moment as another (a child process's target)."""
    barrier.wait(timeout=120)
    prepared = prepare_cache([Path(p) for p in paths], 16, cache, label="shared")
    results.put((os.getpid(), prepared.built, str(prepared.array_path)))


@pytest.mark.timeout(180)
def test_concurrent_processes_that_find_it_missing_build_it_once(tmp_path: Path) -> None:
    paths = [str(p) for p in _images(tmp_path / "images", 120, size=(89, 109))]
    cache = tmp_path / "cache"
    # Two separate processes, each opening the lock file itself (as two trials do). Forked rather
    # than spawned: a spawned child re-imports torch, up to a minute on this shared 2-core box.
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=_build_after_barrier, args=(paths, str(cache), barrier, results))
                 for _ in range(2)]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=150) for _ in processes]
        for process in processes:
            process.join(timeout=30)
            assert process.exitcode == 0
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
    assert sorted(built for _, built, _ in outcomes) == [False, True], outcomes
    assert len({path for _, _, path in outcomes}) == 1
    builder = next(pid for pid, built, _ in outcomes if built)
    manifest = json.loads(Path(outcomes[0][2]).with_suffix(".json").read_text())
    assert manifest["built_by"].endswith(f":{builder}")
    assert len(list(cache.glob("*.npy"))) == 1 and not list(cache.glob("*.tmp"))


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_stops_the_build_with_one_line_naming_it(tmp_path: Path, workers: int) -> None:
    paths = _images(tmp_path / "images", 4)
    paths[1].write_bytes(b"not a jpeg")
    with pytest.raises(RaysweepError) as raised:
        prepare_cache(paths, 8, tmp_path / "cache", label="bad", workers=workers)
    message = str(raised.value)
    assert "\n" not in message and str(paths[1]) in message and "cannot be read" in message
    assert not list((tmp_path / "cache").glob("*.json")) and not list((tmp_path / "cache").glob("*.tmp"))


def test_the_dataset_pickles_without_its_pixels(tmp_path: Path) -> None:
    data = cache_dataset(ImageFolderDataset(_images(tmp_path / "images", 40, size=(64, 64))[0].parent, image_size=32),
                         tmp_path / "cache", label="big")
    _ = data[0]  # the map is open now
    copy = pickle.loads(pickle.dumps(data))
    assert len(pickle.dumps(data)) < data.prepared.nbytes / 4
    assert torch.equal(copy[7][0], data[7][0])


def test_cache_keys_default_validation_and_switching_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = trial_config_from_dict(tiny_trial_tree())
    assert cfg.data.cache is True and cfg.data.cache_dir is None
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "raysweep" == resolve_cache_dir(None)
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "raysweep"
    assert validate_model(TrialConfig, {"data": {"cache_dir": "~/prepared"}}).data.cache_dir == Path.home() / "prepared"
    monkeypatch.chdir(tmp_path)  # relative: made absolute where the config is read, so every trial shares it
    assert validate_model(TrialConfig, {"data": {"cache_dir": "prepared"}}).data.cache_dir == tmp_path / "prepared"
    (tmp_path / "a_file").write_text("")
    with pytest.raises(RaysweepError, match=r"data.cache_dir .*a_file is a file, not a folder"):
        validate_model(TrialConfig, {"data": {"cache_dir": str(tmp_path / "a_file")}})
    with pytest.raises(RaysweepError, match="data.cache"):
        validate_model(TrialConfig, {"data": {"cache": "sometimes"}})

    root = tmp_path / "images"
    _images(root, 10)
    off = DataConfig(dataset="image_folder", root=root, image_size=8, val_size=2, cache=False,
                     cache_dir=tmp_path / "unused")
    train_set, _ = build_datasets(off)
    assert not isinstance(train_set, CachedImages) and not (tmp_path / "unused").exists()
    # Generated data ignores the cache.
    squares = build_datasets(DataConfig(image_size=16, val_size=4, cache_dir=tmp_path / "unused",
                                        xysquares={"square_size": 4, "num_squares": 1}))
    assert not isinstance(squares[0], CachedImages) and not (tmp_path / "unused").exists()


def _sweep_file(tmp_path: Path, root: Path, cache: Path) -> Path:
    trial = tiny_trial_tree(**{"data.dataset": "image_folder", "data.root": str(root), "data.val_size": 4,
                               "data.cache_dir": str(cache)})
    sweep = {"name": "prepare_me", "trial": trial,
             "search": {"grid": {"data.image_size": [8, 16], "objective.beta": [0.5, 1.0], "data.hflip": [True, False]}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(sweep))  # JSON is YAML
    return path


def test_prepare_builds_each_cache_of_a_sweep_once_then_finds_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, cache = tmp_path / "images", tmp_path / "cache"
    _images(root, 24)
    sweep = _sweep_file(tmp_path, root, cache)
    assert main(["prepare", str(sweep), "--workers", "0", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # 8 trials, 2 image sizes x (train, val): 4 caches.
    assert len(lines) == 4 and all(line.startswith(f"prepared {cache}/image_folder-") for line in lines), lines
    assert {"20 images at 8 px", "4 images at 8 px", "20 images at 16 px", "4 images at 16 px"} == {
        line.split(": ")[1].split(" (")[0] for line in lines}
    assert all(" MB) in " in line and line.endswith("img/s)") for line in lines)
    assert main(["prepare", str(sweep), "--no-progress"]) == 0
    again = capsys.readouterr().out.splitlines()
    assert len(again) == 4 and all(line.startswith("already prepared ") for line in again)
    assert len(list(cache.glob("*.npy"))) == 4
    # A trial of the sweep reads the prepared files (it builds nothing).
    cfg = DataConfig(dataset="image_folder", root=root, image_size=16, val_size=4, cache_dir=cache)
    assert not any(dataset.prepared.built for dataset in build_datasets(cfg))

    generated = tmp_path / "generated.yaml"
    generated.write_text(json.dumps({"name": "squares", "trial": tiny_trial_tree()}))
    assert main(["prepare", str(generated)]) == 0
    assert capsys.readouterr().out.startswith("nothing to prepare")


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_prepare_refuses_a_bad_root_with_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    root = tmp_path / "images"
    if problem == "empty":
        root.mkdir()
    sweep = _sweep_file(tmp_path, root, tmp_path / "cache")
    assert main(["prepare", str(sweep), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(root) in err
    assert ("does not exist" if problem == "missing" else "has no images") in err


@pytest.mark.slow
def test_a_run_is_bit_identical_cached_or_not(tmp_path: Path) -> None:
    """Same split, same step-seeded flips and batches: every logged number equal, cached or not."""
    from raysweep.train.loop import train  # here, not at the top: the spawned builders import this module

    root = tmp_path / "images"
    _images(root, 48, size=(20, 25))
    finals = {}
    logs = {}
    # Decoded; cached (built in the trial process); cached, built by a DataLoader worker process.
    for cache, workers in ((False, 0), (True, 0), (True, 1)):
        tree = tiny_trial_tree(**{
            "data.dataset": "image_folder", "data.root": str(root), "data.val_size": 16, "data.cache": cache,
            "data.cache_dir": str(tmp_path / f"cache{workers}"), "data.hflip": True, "data.num_workers": workers,
            "train.max_steps": 8, "train.val_every": 4,  # 2 steps per epoch: 4 epochs of reshuffled, flipped batches
        })
        out = tmp_path / f"run_cache_{cache}_{workers}"
        train(trial_config_from_dict(tree), out, progress=False)
        logs[cache, workers] = (out / "metrics.jsonl").read_text().splitlines()
        final = json.loads((out / "final.json").read_text())
        final.pop("seconds")
        final.pop("images_per_second")
        finals[cache, workers] = final
    assert len(logs[False, 0]) == 2
    assert logs[True, 0] == logs[False, 0] and logs[True, 1] == logs[False, 0]
    assert finals[True, 0] == finals[False, 0] and finals[True, 1] == finals[False, 0]
    assert len(list((tmp_path / "cache0").glob("*.npy"))) == len(list((tmp_path / "cache1").glob("*.npy"))) == 2
