"""`FolderDataset`: decoding of odd image modes, split folders, folder errors, bad files, and
the paper's transforms on real CIFAR JPEGs."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data.augment import eval_transform, train_transform
from resnets.data.folder import FolderDataset
from resnets.data.resumable_loader import make_loader
from resnets.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


# ------------------------------------------------------------------------ folder decoding


def _save(path: Path, img: Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)


def test_odd_image_modes_become_8bit_rgb(tmp_path):
    root = tmp_path / "data"
    _save(root / "a" / "gray.png", Image.new("L", (7, 5), 77))
    _save(root / "a" / "cmyk.jpg", Image.new("CMYK", (7, 5), (0, 255, 255, 0)), quality=100)
    _save(root / "b" / "rgba.png", Image.new("RGBA", (7, 5), (200, 100, 50, 0)))
    _save(root / "b" / "palette.png", Image.new("P", (7, 5), 3))
    wide = Image.fromarray(np.full((5, 7), 65535, dtype=np.uint16))
    _save(root / "b" / "wide16.png", wide)
    ds = FolderDataset(root)
    assert ds.classes == ["a", "b"] and ds.targets == [0, 0, 1, 1, 1]
    images = {Path(path).name: ds[i][0] for i, (path, _) in enumerate(ds.samples)}
    for img in images.values():
        assert img.dtype == torch.uint8 and img.shape == (3, 5, 7)
    assert images["gray.png"].eq(77).all()
    red = images["cmyk.jpg"].float().mean((1, 2))  # CMYK (0, 255, 255, 0) is red
    assert red[0] > 240 and red[1] < 15 and red[2] < 15
    assert images["rgba.png"].eq(0).all(), "fully transparent composites onto black"
    assert images["wide16.png"].eq(255).all(), "16-bit white scales to 8-bit white"


def test_split_folder_hidden_files_and_transform(tmp_path):
    for split in ("train", "val"):
        for cls in ("dog", "cat"):
            _save(tmp_path / split / cls / "x.png", Image.new("RGB", (40, 40), (10, 20, 30)))
    (tmp_path / "train" / "cat" / "._x.png").write_bytes(b"macOS resource fork")
    (tmp_path / "train" / ".cache").mkdir()
    ds = FolderDataset(tmp_path, split="train", transform=eval_transform(crop=32, resize=36))
    assert ds.classes == ["cat", "dog"] and len(ds) == 2
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 1
    with pytest.raises(DataError, match="split="):
        FolderDataset(tmp_path)
    with pytest.raises(DataError, match="no test/ folder"):
        FolderDataset(tmp_path, split="test")


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    _save(tmp_path / "full" / "x.png", Image.new("RGB", (4, 4)))
    (tmp_path / "hollow").mkdir()
    with pytest.raises(DataError, match=str(tmp_path / "hollow")):
        FolderDataset(tmp_path)


def test_missing_root_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        FolderDataset(tmp_path / "nowhere")


def test_bad_file_names_its_path_or_is_replaced_with_skip_bad_images(tmp_path):
    _save(tmp_path / "a" / "0.png", Image.new("RGB", (4, 4), (1, 1, 1)))
    (tmp_path / "a" / "1.png").write_bytes(b"not a png")
    _save(tmp_path / "a" / "2.png", Image.new("RGB", (4, 4), (2, 2, 2)))
    with pytest.raises(DataError, match=r"1\.png.*--skip-bad-images"):
        FolderDataset(tmp_path)[1]
    ds = FolderDataset(tmp_path, skip_bad_images=True)
    with pytest.warns(UserWarning, match="1.png"):
        img, _ = ds[1]
    assert img.eq(2).all(), "the next readable sample stands in"
    assert ds.skipped == [str(tmp_path / "a" / "1.png")]


@pytest.mark.realdata
def test_paper_transforms_on_real_cifar_jpegs(shared_cifar_tar, tmp_path):
    """The reduced-size paper pipeline (crop 32, scale (32, 60)) on the shared JPEGs."""
    with tarfile.open(shared_cifar_tar, "r:xz") as tar:
        taken = 0
        for member in tar:
            if member.isfile() and member.name.endswith((".jpg", ".png")) and taken < 24:
                cls = Path(member.name).parent.name
                data = tar.extractfile(member).read()
                (tmp_path / cls).mkdir(exist_ok=True)
                (tmp_path / cls / Path(member.name).name).write_bytes(data)
                taken += 1
            if taken == 24:
                break
    ds = FolderDataset(tmp_path, transform=train_transform(crop=32, scale=(32, 60)))
    loader = make_loader(ds, 8, train=True, seed=0, workers=0)
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,) and torch.isfinite(x).all()
    assert -3 < x.mean() < 3 and 0.2 < x.std() < 3
