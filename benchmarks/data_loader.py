"""Images per second of the training loop's data path: decoding the files against the prepared cache.

A folder of CelebA-sized JPEGs (178 x 218, smooth random images with mild noise saved at quality
90, about 11 KB each like CelebA's, generated into a temporary folder) is read exactly as the
training loop reads it: ``build_datasets`` of an ``image_folder`` data block (``data.cache`` false,
then true), the loop's own ``training_loader`` with its ``StepBatchSampler`` (batch 64, the seeded
per-epoch permutation, drop-last), and ``batch_images`` (the float32 images the loop trains on).
Time runs from the first batch to the last, so worker start-up is left out. One torch thread per
process.

- decode path: ``num_workers`` loader processes (0, 1, 2) decode the files; per core is the rate
  divided by ``max(1, workers)``, the processes doing the decoding.
- cache path: the loop reads a prepared cache in the trial process whatever ``num_workers`` says
  (see ``training_loader``), so it is measured that way, one core, beside each decode row (the two
  in turn, so the other load on the machine hits both alike).

The cache's build (decode, crop and resize of every training image once, written to the ``.npy``
memory map) is timed on its own: seconds and images per second, one process.

Goal (issue 13): the cache path at least 10x the decode path per core at 64 px.

    python benchmarks/data_loader.py            # 400 images, 64 and 256 px, 0/1/2 decode workers, 3 repeats
    python benchmarks/data_loader.py --quick    # 40 images, 64 px, 1 worker, batch 16, 1 repeat (smoke test)

Prints one table and one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from raysweep.config import DataConfig
from raysweep.data import build_datasets
from raysweep.data.cache import batch_images, training_loader
from raysweep.train.sampler import StepBatchSampler

BATCH = 64  # train.batch_size's default
QUICK_BATCH = 16
VAL_SIZE = 16
CELEBA_SIZE = (178, 218)  # width, height of an aligned CelebA face


def write_jpegs(folder: Path, count: int, seed: int = 0) -> None:
    """CelebA-sized JPEGs with photo-like statistics: coarse random colour fields resized smoothly,
    plus mild noise (pure noise would make the JPEGs several times larger and slower to decode)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (14, 12, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize(CELEBA_SIZE, Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(smooth + rng.integers(-6, 7, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i + 1:06d}.jpg", quality=90)


def loader_rate(dataset: Dataset, workers: int, steps: int, batch: int) -> float:
    """Images per second the loop's DataLoader delivers from ``dataset`` over ``steps`` batches
    (timed from the first batch, so the workers' start-up is not counted)."""
    sampler = StepBatchSampler(num_items=len(dataset), batch_size=batch, rank=0, world_size=1,  # type: ignore[arg-type]
                               seed=0, start_step=0, total_steps=steps + 1)
    started = None
    images = 0
    for batch in training_loader(dataset, sampler, num_workers=workers, pin_memory=False):
        x = batch_images(batch)  # the float32 images the loop trains on
        if started is None:
            started = time.perf_counter()  # the first batch: workers are up
            continue
        images += x.shape[0]
    assert started is not None
    return images / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="40 images, 64 px, 1 worker, batch 16, 1 repeat (a few seconds)")
    parser.add_argument("--images", type=int, default=None, help="JPEGs to generate (default 400, quick 40)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="image sizes (default 64 256, quick 64)")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="DataLoader worker counts (default 0 1 2, quick 1)")
    parser.add_argument("--repeats", type=int, default=None, help="measurements per row, median kept (default 3)")
    args = parser.parse_args()
    count = args.images or (40 if args.quick else 400)
    sizes = args.sizes or ([64] if args.quick else [64, 256])
    worker_counts = args.workers or ([1] if args.quick else [0, 1, 2])
    repeats = args.repeats or (1 if args.quick else 3)
    batch = QUICK_BATCH if args.quick else BATCH
    torch.set_num_threads(1)
    steps_per_epoch = (count - VAL_SIZE) // batch
    if steps_per_epoch < 1:
        parser.error(f"--images {count}: need at least {batch + VAL_SIZE} for one batch of {batch}")

    rows: list[dict[str, Any]] = []
    builds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="raysweep-data-loader-") as tmp:
        folder = Path(tmp) / "jpegs"
        write_jpegs(folder, count)
        for size in sizes:
            data = DataConfig(dataset="image_folder", root=folder, image_size=size, val_size=VAL_SIZE,
                              cache_dir=Path(tmp) / f"cache{size}")
            decoded, _ = build_datasets(data.model_copy(update={"cache": False}))
            started = time.perf_counter()
            cached, _ = build_datasets(data, progress=False)
            total = time.perf_counter() - started
            prepared = cached.prepared  # type: ignore[attr-defined]
            builds.append({"image_size": size, "images": prepared.count, "seconds": round(total, 3),
                           "images_per_second": round(prepared.count / total, 1),
                           "megabytes": round(prepared.megabytes, 2)})
            # Decode: 2 epochs (every image decoded twice); cache: enough epochs for a stable time.
            decode_steps = 2 * steps_per_epoch
            cache_steps = 30 * steps_per_epoch
            for workers in worker_counts:
                decode, cache = [], []
                for _ in range(repeats):  # in turn, so the other load on the machine hits both alike
                    decode.append(loader_rate(decoded, workers, decode_steps, batch))
                    cache.append(loader_rate(cached, workers, cache_steps, batch))
                row = {"image_size": size, "workers": workers,
                       "decode_img_s": round(statistics.median(decode), 1),
                       "cache_img_s": round(statistics.median(cache), 1)}
                row["decode_img_s_per_core"] = round(row["decode_img_s"] / max(1, workers), 1)
                row["cache_img_s_per_core"] = row["cache_img_s"]  # read in the trial process: one core
                row["ratio_per_core"] = round(row["cache_img_s_per_core"] / row["decode_img_s_per_core"], 2)
                rows.append(row)
                print(f"{size} px, {workers} decode workers: decode {row['decode_img_s']:.0f} img/s, "
                      f"cache {row['cache_img_s']:.0f} img/s", file=sys.stderr, flush=True)

    print(f"\n{count} CelebA-sized JPEGs ({CELEBA_SIZE[0]}x{CELEBA_SIZE[1]}), batch {batch}, median of {repeats}")
    print(f"{'size':>5}{'decode workers':>16}{'decode img/s':>14}{'decode/core':>13}{'cache img/s (1 core)':>22}"
          f"{'cache/decode per core':>23}")
    for row in rows:
        print(f"{row['image_size']:>5}{row['workers']:>16}{row['decode_img_s']:>14.0f}"
              f"{row['decode_img_s_per_core']:>13.0f}{row['cache_img_s']:>22.0f}{row['ratio_per_core']:>23.1f}")
    for build in builds:
        print(f"build at {build['image_size']} px: {build['images']} images in {build['seconds']:.2f} s "
              f"({build['images_per_second']:.0f} img/s, one process), {build['megabytes']:.1f} MB")
    at_64 = [row["ratio_per_core"] for row in rows if row["image_size"] == 64]
    summary: dict[str, Any] = {
        "benchmark": "data_loader", "images": count, "batch_size": batch, "repeats": repeats, "rows": rows,
        "builds": builds, "min_ratio_per_core_64px": min(at_64) if at_64 else None,
        "goal_10x_at_64px_met": bool(at_64) and min(at_64) >= 10.0,
    }
    if at_64:
        verdict = "meets" if summary["goal_10x_at_64px_met"] else "misses"
        print(f"\ncache / decode per core at 64 px: at least {min(at_64):.1f}x ({verdict} the 10x goal)")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
