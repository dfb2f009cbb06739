"""The resumable, rank-sliced sample order and the loader built on it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from resnets.data.augment import train_transform
from resnets.data.resumable_loader import ResumableSampler, make_loader, set_loader_epoch

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _noise(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (c, h, w), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


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
