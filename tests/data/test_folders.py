"""Folder datasets on small generated image files: layout, preprocessing, splits and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from raysweep.data.folders import CelebA, ImageFolderDataset, TinyImageNet, load_image
from raysweep.errors import RaysweepError


def _write(path: Path, size: tuple[int, int] = (20, 20), colour: tuple[int, int, int] = (0, 128, 255)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _celeba(root: Path, count: int = 10, partition: list[int] | None = None) -> Path:
    for i in range(1, count + 1):
        _write(root / "img_align_celeba" / f"{i:06d}.jpg", size=(18, 22), colour=(i * 20, 0, 0))
    if partition is not None:
        lines = "".join(f"{i:06d}.jpg {code}\n" for i, code in enumerate(partition, start=1))
        (root / "list_eval_partition.txt").write_text(lines)
    return root


def _tiny_imagenet(root: Path) -> Path:
    for wnid in ("n02", "n01"):
        for i in range(3):
            _write(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", size=(64, 64))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    for i in range(4):
        _write(root / "val" / "images" / f"val_{i}.JPEG", size=(64, 64))
    (root / "val" / "val_annotations.txt").write_text(
        "".join(f"val_{i}.JPEG\t{('n01', 'n02')[i % 2]}\t0\t0\t63\t63\n" for i in range(4))
    )
    return root


def test_image_folder_finds_images_recursively_in_sorted_order(tmp_path: Path) -> None:
    _write(tmp_path / "b.png")
    _write(tmp_path / "a.JPG")
    _write(tmp_path / "sub" / "deeper" / "c.webp")
    _write(tmp_path / "sub" / "d.bmp")
    _write(tmp_path / "e.jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    data = ImageFolderDataset(tmp_path, image_size=8)
    names = [p.relative_to(tmp_path).as_posix() for p in data.paths]
    assert names == ["a.JPG", "b.png", "e.jpeg", "sub/d.bmp", "sub/deeper/c.webp"]
    assert (data.channels, data.image_size, data.factor_names, data.factor_sizes) == (3, 8, (), ())


def test_items_have_the_right_shape_dtype_and_range(tmp_path: Path) -> None:
    _write(tmp_path / "black.png", size=(30, 40), colour=(0, 0, 0))
    _write(tmp_path / "white.png", size=(40, 30), colour=(255, 255, 255))
    _write(tmp_path / "grey.png", size=(12, 12), colour=(0, 128, 255))
    data = ImageFolderDataset(tmp_path, image_size=16)
    for image, factors in (data[i] for i in range(len(data))):
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        assert factors.shape == (0,) and factors.dtype == torch.long
        assert image.min() >= -1.0 and image.max() <= 1.0
    black, grey, white = data[0][0], data[1][0], data[2][0]
    assert torch.allclose(black, torch.full_like(black, -1.0))
    assert torch.allclose(white, torch.full_like(white, 1.0))
    assert torch.allclose(grey[:, 5, 5], torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]), atol=1e-6)


def test_centre_crop_drops_the_borders_of_a_wide_image(tmp_path: Path) -> None:
    # 60x20 image: a red band in the left 15 columns, green in the middle. The centre 20x20
    # square (columns 20..39) is all green, so the red band must vanish.
    image = Image.new("RGB", (60, 20), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 15, 20))
    image.save(tmp_path / "wide.png")
    loaded = load_image(tmp_path / "wide.png", image_size=10)
    assert loaded.shape == (3, 10, 10)
    assert torch.allclose(loaded[0], torch.full((10, 10), -1.0))  # no red left
    assert torch.allclose(loaded[1], torch.full((10, 10), 1.0))


def test_centre_crop_keeps_the_middle_of_a_tall_image(tmp_path: Path) -> None:
    image = Image.new("RGB", (16, 48), (0, 0, 0))
    image.paste((255, 255, 255), (0, 16, 16, 32))  # white middle third
    image.save(tmp_path / "tall.png")
    assert torch.allclose(load_image(tmp_path / "tall.png", image_size=16), torch.ones(3, 16, 16))


def test_resize_is_bicubic_and_upsamples(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 8), (0, 0, 0))
    image.paste((255, 255, 255), (4, 0, 8, 8))
    image.save(tmp_path / "edge.png")
    loaded = load_image(tmp_path / "edge.png", image_size=32)
    assert loaded.shape == (3, 32, 32)
    row = loaded[0, 16]
    assert row[0] == -1.0 and row[-1] == 1.0
    assert ((row > -1.0) & (row < 1.0)).any()  # interpolated, not nearest-neighbour


def test_missing_root_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for build in (ImageFolderDataset, CelebA, TinyImageNet):
        with pytest.raises(RaysweepError, match=str(missing)) as raised:
            build(missing)
        assert "does not exist" in str(raised.value) and "\n" not in str(raised.value)


def test_root_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    file = _write(tmp_path / "x.png")
    with pytest.raises(RaysweepError, match="is not a folder"):
        ImageFolderDataset(file)


def test_empty_root_names_the_path_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(RaysweepError) as raised:
        ImageFolderDataset(tmp_path)
    message = str(raised.value)
    assert str(tmp_path) in message and "has no images" in message and ".png" in message


def test_corrupt_image_is_named_at_load_time(tmp_path: Path) -> None:
    _write(tmp_path / "good.png")
    (tmp_path / "junk.png").write_bytes(b"this is not a png")
    truncated = _write(tmp_path / "truncated.jpg", size=(64, 64), colour=(10, 200, 30))
    truncated.write_bytes(truncated.read_bytes()[:200])
    data = ImageFolderDataset(tmp_path, image_size=8)  # listing does not decode
    assert data[0][0].shape == (3, 8, 8)
    for index, name in ((1, "junk.png"), (2, "truncated.jpg")):
        with pytest.raises(RaysweepError) as raised:
            data[index]
        message = str(raised.value)
        assert str(tmp_path / name) in message and "\n" not in message


def test_bad_image_size_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path / "a.png")
    with pytest.raises(RaysweepError, match="image_size=0"):
        ImageFolderDataset(tmp_path, image_size=0)


def test_celeba_honours_the_partition_file(tmp_path: Path) -> None:
    partition = [0, 0, 1, 2, 0, 1, 2, 0, 0, 0]
    root = _celeba(tmp_path, partition=partition)
    expected = {
        split: [f"{i:06d}.jpg" for i, code in enumerate(partition, start=1) if code == number]
        for split, number in (("train", 0), ("val", 1), ("test", 2))
    }
    for split, names in expected.items():
        data = CelebA(root, split=split, image_size=8)  # type: ignore[arg-type]
        assert [p.name for p in data.paths] == names
    assert len(CelebA(root, split="all")) == 10
    image, factors = CelebA(root, split="val", image_size=12)[0]
    assert image.shape == (3, 12, 12) and factors.shape == (0,)


def test_celeba_reads_the_kaggle_layout(tmp_path: Path) -> None:
    for i in range(1, 5):
        _write(tmp_path / "img_align_celeba" / "img_align_celeba" / f"{i:06d}.jpg")
    (tmp_path / "list_eval_partition.csv").write_text(
        "image_id,partition\n000001.jpg,0\n000002.jpg,0\n000003.jpg,1\n000004.jpg,2\n"
    )
    assert [p.name for p in CelebA(tmp_path, split="train").paths] == ["000001.jpg", "000002.jpg"]
    assert [p.name for p in CelebA(tmp_path, split="test").paths] == ["000004.jpg"]


def test_celeba_without_partition_file_uses_a_seeded_split(tmp_path: Path) -> None:
    root = _celeba(tmp_path, count=40)
    parts = {split: CelebA(root, split=split, split_seed=7).paths for split in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [32, 4, 4]
    assert not set(parts["train"]) & set(parts["val"])
    assert not set(parts["val"]) & set(parts["test"])
    assert set().union(*parts.values()) == set(CelebA(root, split="all").paths)
    assert CelebA(root, split="val", split_seed=7).paths == parts["val"]
    assert CelebA(root, split="val", split_seed=8).paths != parts["val"]


def test_celeba_errors_name_the_folder_and_the_fix(tmp_path: Path) -> None:
    tmp_path.joinpath("other").mkdir()
    with pytest.raises(RaysweepError) as raised:
        CelebA(tmp_path)
    assert str(raised.value) == (
        f"data.root {tmp_path} has no img_align_celeba/ folder: download CelebA's aligned images "
        f"(img_align_celeba.zip) and extract them to {tmp_path / 'img_align_celeba'}/"
    )
    (tmp_path / "img_align_celeba").mkdir()
    with pytest.raises(RaysweepError, match="has no images"):
        CelebA(tmp_path)
    with pytest.raises(RaysweepError, match="split='valid'"):
        CelebA(tmp_path, split="valid")  # type: ignore[arg-type]


def test_celeba_partition_listing_missing_files_is_an_error(tmp_path: Path) -> None:
    root = _celeba(tmp_path, count=3, partition=[0, 0, 0, 0])
    with pytest.raises(RaysweepError, match="000004.jpg"):
        CelebA(root)
    (root / "list_eval_partition.txt").write_text("000001.jpg train\n")
    with pytest.raises(RaysweepError, match="line 1"):
        CelebA(root)


def test_tiny_imagenet_train_and_val(tmp_path: Path) -> None:
    root = _tiny_imagenet(tmp_path)
    train = TinyImageNet(root, split="train", image_size=32)
    assert len(train) == 6
    assert train.classes == ("n01", "n02")
    assert train.labels == [0, 0, 0, 1, 1, 1]
    assert all(p.suffix == ".JPEG" for p in train.paths)
    image, factors = train[4]
    assert image.shape == (3, 32, 32) and factors.shape == (0,)
    val = TinyImageNet(root, split="val")
    assert [p.name for p in val.paths] == [f"val_{i}.JPEG" for i in range(4)]
    assert val.labels == [0, 1, 0, 1]
    assert val[0][0].shape == (3, 64, 64)


def test_tiny_imagenet_errors_name_the_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(RaysweepError, match=f"{tmp_path} has no train/ folder"):
        TinyImageNet(tmp_path)
    with pytest.raises(RaysweepError, match=f"{tmp_path} has no val/images/ folder"):
        TinyImageNet(tmp_path, split="val")
    (tmp_path / "train" / "n01" / "images").mkdir(parents=True)
    with pytest.raises(RaysweepError, match="train split has no images"):
        TinyImageNet(tmp_path)
    with pytest.raises(RaysweepError, match="split='test'"):
        TinyImageNet(tmp_path, split="test")  # type: ignore[arg-type]


def test_folder_dataset_works_with_a_dataloader_and_workers(tmp_path: Path) -> None:
    for i in range(4):
        _write(tmp_path / f"{i}.png", size=(10 + i, 12), colour=(i * 60, 0, 0))
    data = ImageFolderDataset(tmp_path, image_size=8)
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=1)
    images, factors = next(iter(loader))
    assert images.shape == (4, 3, 8, 8) and factors.shape == (4, 0)
