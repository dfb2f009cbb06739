"""ImageNet-style folder data: the paper's augmentation, decoding of odd image modes, folder
errors, and the resumable, rank-sliced sample order."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from resnets.data.folder import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    FolderDataset,
    Lighting,
    RandomShorterSide,
    ResumableSampler,
    eval_transform,
    make_loader,
    set_loader_epoch,
    train_transform,
)
from resnets.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _noise(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (c, h, w), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


# ------------------------------------------------------------------------- scale augmentation


@pytest.mark.parametrize("shape", [(3, 21, 30), (3, 50, 35), (3, 40, 40)])
def test_shorter_side_is_uniform_in_the_range_with_both_ends_reached(shape):
    resize = RandomShorterSide(32, 36)
    img = _noise(*shape)
    torch.manual_seed(0)
    sides = []
    for _ in range(120):
        out = resize(img)
        h, w = out.shape[-2:]
        sides.append(min(h, w))
        # Aspect ratio kept: the longer side follows the shorter one.
        long_in, short_in = max(shape[1:]), min(shape[1:])
        assert max(h, w) == int(min(h, w) * long_in / short_in)
    assert set(sides) == {32, 33, 34, 35, 36}


def test_shorter_side_is_exact_where_random_shortest_size_is_one_short():
    # torchvision's RandomShortestSize truncates 21 * (345 / 21) to 344; ours gives 345.
    out = RandomShorterSide(345, 345)(_noise(3, 21, 30))
    assert min(out.shape[-2:]) == 345


def _windows(img: torch.Tensor, size: int) -> torch.Tensor:
    """All size x size windows of a (C, H, W) image, (nh, nw, C, size, size)."""
    return img.unfold(1, size, 1).unfold(2, size, 1).permute(1, 2, 0, 3, 4).contiguous()


def test_train_crop_is_a_window_of_the_resized_image_or_its_mirror():
    img = _noise(3, 16, 24)
    resized = TF.resize(img, [20], antialias=True)  # (3, 20, 30): the only size drawn below
    tf = train_transform(crop=16, scale=(20, 20), mean=(0, 0, 0), std=(1, 1, 1), lighting=0)
    plain, mirrored = _windows(resized, 16), _windows(resized.flip(-1), 16)  # (5, 15, ...)
    torch.manual_seed(1)
    offsets, flips = set(), []
    for _ in range(150):
        out = tf(img)
        assert out.shape == (3, 16, 16) and out.dtype == torch.float32
        u8 = (out * 255).round().to(torch.uint8)
        hit = (plain == u8).flatten(2).all(-1)
        hit_mirror = (mirrored == u8).flatten(2).all(-1)
        assert int(hit.sum() + hit_mirror.sum()) == 1, "exactly one window must match"
        flipped = bool(hit_mirror.any())
        dy, dx = (hit_mirror if flipped else hit).nonzero()[0].tolist()
        offsets.add((dy, dx if not flipped else 14 - dx))
        flips.append(flipped)
    assert 0.3 < np.mean(flips) < 0.7
    dys, dxs = {o[0] for o in offsets}, {o[1] for o in offsets}
    assert min(dys) == 0 and max(dys) == 4 and min(dxs) == 0 and max(dxs) == 14


def test_train_transform_normalizes_and_rejects_a_crop_larger_than_the_scale():
    img = torch.full((3, 40, 40), 128, dtype=torch.uint8)
    mean, std = (0.2, 0.3, 0.4), (0.5, 0.25, 0.125)
    out = train_transform(crop=32, scale=(32, 60), mean=mean, std=std, lighting=0)(img)
    expected = (128 / 255 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(out.mean((1, 2)), expected)
    with pytest.raises(ValueError, match="crop"):
        train_transform(crop=64, scale=(32, 60))


def test_eval_transform_is_the_resized_center_crop():
    img = _noise(3, 30, 45)
    out = eval_transform(crop=32, resize=36, mean=(0, 0, 0), std=(1, 1, 1))(img)
    resized = TF.resize(img, [36], antialias=True)  # (3, 36, 54)
    torch.testing.assert_close(out, resized[:, 2:34, 11:43].float() / 255)


# ------------------------------------------------------------------------------- lighting


def test_lighting_offsets_have_the_pca_mean_and_covariance():
    torch.manual_seed(0)
    n, std = 40_000, 0.1
    offsets = Lighting(std)(torch.zeros(n, 3, 1, 1)).reshape(n, 3).double()
    eigval = torch.tensor(IMAGENET_EIGVAL, dtype=torch.float64)
    eigvec = torch.tensor(IMAGENET_EIGVEC, dtype=torch.float64)
    expected = eigvec @ torch.diag((std * eigval) ** 2) @ eigvec.T
    assert offsets.mean(0).abs().max() < 6 * (expected.diag().max() / n).sqrt()
    torch.testing.assert_close(offsets.T.cov(), expected, rtol=0, atol=0.04 * expected.max())
    # Along each principal axis the variance is (std * eigval)^2, the small ones included.
    along = (offsets @ eigvec).var(0)
    torch.testing.assert_close(along, (std * eigval) ** 2, rtol=0.05, atol=0)


def test_lighting_adds_one_offset_per_image_and_zero_std_is_identity():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 5, 6)
    out = Lighting(0.1)(x)
    delta = out - x  # (4, 3, 5, 6): constant over each image's pixels
    assert torch.allclose(delta, delta[..., :1, :1].expand_as(delta), atol=1e-6)
    assert not torch.allclose(delta[0], delta[1])
    assert Lighting(0.0)(x) is x


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


# --------------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("n, world", [(10, 3), (12, 3), (5, 8)])
def test_rank_slices_are_disjoint_equal_and_cover_the_permutation(n, world):
    samplers = [ResumableSampler(n, seed=4, epoch=2, rank=r, world_size=world)
                for r in range(world)]
    parts = [list(s) for s in samplers]
    assert len({len(p) for p in parts}) == 1, "every rank runs the same number of steps"
    order = samplers[0].global_order()
    assert sorted(order[:n].tolist()) == list(range(n))  # a permutation, then padding
    # Interleaving the ranks gives back the padded permutation: positions are disjoint.
    interleaved = [parts[p % world][p // world] for p in range(len(order))]
    assert interleaved == order.tolist()
    assert set().union(*map(set, parts)) == set(range(n))


def test_eval_order_is_unpadded_and_in_order():
    parts = [list(ResumableSampler(10, shuffle=False, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(10)) and parts[0] == [0, 3, 6, 9]


def test_resume_skip_is_the_tail_of_a_full_pass_and_order_is_seeded():
    full = list(ResumableSampler(50, seed=1, epoch=3, rank=1, world_size=2))
    assert list(ResumableSampler(50, seed=1, epoch=3, start=7, rank=1, world_size=2)) == full[7:]
    assert list(ResumableSampler(50, seed=1, epoch=3, rank=1, world_size=2)) == full
    assert list(ResumableSampler(50, seed=1, epoch=4, rank=1, world_size=2)) != full
    assert list(ResumableSampler(50, seed=2, epoch=3, rank=1, world_size=2)) != full
    seeded = list(ResumableSampler(50, seed=1, epoch=3, rank=1, world_size=2, with_seeds=True))
    assert [i for i, _ in seeded] == full and len({s for _, s in seeded}) == len(seeded)


class _NoiseImages(Dataset):
    """Deterministic uint8 images through a random transform."""

    def __init__(self, n: int, transform) -> None:
        self.images = [_noise(3, 36, 44, seed=i) for i in range(n)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), i % 3


def _batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_batches_depend_only_on_seed_epoch_and_batch_index():
    ds = _NoiseImages(20, train_transform(crop=32, scale=(36, 48)))
    full = _batches(make_loader(ds, 4, train=True, seed=5, epoch=1, workers=0))
    assert len(full) == 5
    resumed = _batches(make_loader(ds, 4, train=True, seed=5, epoch=1, start_batch=3, workers=0))
    for (x, y), (xr, yr) in zip(full[3:], resumed, strict=True):
        assert torch.equal(x, xr) and torch.equal(y, yr)
    # Worker processes change nothing: each sample carries its own augmentation seed.
    parallel = make_loader(ds, 4, train=True, seed=5, epoch=1, workers=2)
    for (x, y), (xp, yp) in zip(full, _batches(parallel), strict=True):
        assert torch.equal(x, xp) and torch.equal(y, yp)
    # The same loader (and workers) moves on to another epoch, and back.
    set_loader_epoch(parallel, 2)
    other = _batches(parallel)
    assert not torch.equal(other[0][0], full[0][0])
    set_loader_epoch(parallel, 1, start_batch=4)
    assert torch.equal(_batches(parallel)[0][0], full[4][0])
    # The caller's random state is left alone with workers=0.
    torch.manual_seed(9)
    expected = torch.rand(1)
    torch.manual_seed(9)
    _batches(make_loader(ds, 4, train=True, seed=5, workers=0))
    assert torch.equal(torch.rand(1), expected)


def test_eval_loader_keeps_every_image_in_order_and_distributed_slices():
    ds = _NoiseImages(10, lambda img: F.avg_pool2d(img.float()[None], 4)[0])
    ys = torch.cat([y for _, y in make_loader(ds, 4, train=False, workers=0)])
    assert ys.tolist() == [i % 3 for i in range(10)]
    rank1 = make_loader(ds, 2, train=True, seed=0, workers=0, distributed=True, rank=1,
                        world_size=2)
    assert len(rank1) == 2 and len(list(rank1)) == 2  # 5 per rank, drop_last
    with pytest.raises(ValueError, match="distributed"):
        make_loader(ds, 2, train=True, workers=0, distributed=True)
