"""The device-resident pipeline: augmentation primitives, normalization and DeviceLoader."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from resnets.data import (
    DeviceLoader,
    Normalization,
    channel_stats,
    per_pixel_mean,
    random_crop,
    random_flip,
)
from resnets.data import device_loader as device_loader_module
from resnets.errors import DataError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _matching_offsets(batch: torch.Tensor, out: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, (2p+1)^2) bool: which zero-padded windows of each input equal its output."""
    b, c, h, w = batch.shape
    windows = F.pad(batch, (pad,) * 4).unfold(2, h, 1).unfold(3, w, 1)  # (B, C, k, k, H, W)
    windows = windows.permute(0, 2, 3, 1, 4, 5).reshape(b, -1, c, h, w)  # (B, k*k, C, H, W)
    return (windows == out[:, None]).flatten(2).all(-1)


def _distinct_images(b: int, c: int = 2, h: int = 5, w: int = 6) -> torch.Tensor:
    # All values distinct and non-zero, so a window of the padded image has one offset only.
    return torch.arange(1, b * c * h * w + 1, dtype=torch.int64).reshape(b, c, h, w)


# ------------------------------------------------------------------------------ random_crop


def test_random_crop_pad_zero_is_identity():
    x = _distinct_images(4)
    assert torch.equal(random_crop(x, 0, _gen(0)), x)


def test_random_crop_takes_padded_windows_at_the_drawn_offsets():
    pad, x = 2, _distinct_images(64)
    out = random_crop(x, pad, _gen(7))
    assert out.shape == x.shape and out.dtype == x.dtype
    matches = _matching_offsets(x, out, pad)
    assert matches.sum(1).eq(1).all(), "each output must be exactly one padded window"
    # The documented draw: one randint((2, B)) of (dy, dx) in [0, 2p].
    dy, dx = torch.randint(0, 2 * pad + 1, (2, 64), generator=_gen(7))
    assert torch.equal(matches.float().argmax(1), dy * (2 * pad + 1) + dx)


def test_random_crop_zero_fills_the_border():
    x = torch.full((1, 1, 3, 3), 9, dtype=torch.uint8)
    # With 500 draws the corner offset (0, 0) appears; its window starts in the padding.
    out = random_crop(x.expand(500, 1, 3, 3), 1, _gen(0))
    corner = out[(out[:, 0, 0, 0] == 0) & (out[:, 0, 0, 1] == 0) & (out[:, 0, 1, 0] == 0)]
    assert len(corner) > 0
    assert torch.equal(corner[0, 0], torch.tensor([[0, 0, 0], [0, 9, 9], [0, 9, 9]],
                                                  dtype=torch.uint8))


def test_random_crop_reaches_every_offset():
    pad, x = 4, _distinct_images(3000, c=1, h=4, w=4)
    matches = _matching_offsets(x, random_crop(x, pad, _gen(1)), pad)
    assert matches.any(0).all(), "all 81 offsets should occur in 3000 draws"


def test_random_crop_is_seeded_and_keeps_dtype():
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    a, b = random_crop(x, 4, _gen(3)), random_crop(x, 4, _gen(3))
    assert torch.equal(a, b) and a.dtype == torch.uint8
    assert not torch.equal(a, random_crop(x, 4, _gen(4)))
    assert random_crop(x.float(), 4, _gen(3)).equal(a.float())


def test_random_crop_rejects_negative_pad():
    with pytest.raises(ValueError, match="pad"):
        random_crop(torch.zeros(1, 3, 4, 4), -1, _gen(0))


# ------------------------------------------------------------------------------ random_flip


def test_random_flip_mirrors_about_half_with_the_drawn_mask():
    x = _distinct_images(1000, c=1, h=2, w=3)
    out = random_flip(x, _gen(5))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert (same ^ mirrored).all(), "each image is either unchanged or mirrored, never both"
    assert 430 <= int(mirrored.sum()) <= 570
    assert torch.equal(mirrored, torch.rand(1000, generator=_gen(5)) < 0.5)


def test_random_flip_is_seeded():
    x = _distinct_images(64)
    assert torch.equal(random_flip(x, _gen(2)), random_flip(x, _gen(2)))
    assert not torch.equal(random_flip(x, _gen(2)), random_flip(x, _gen(3)))


# ------------------------------------------------------------------------------ statistics


def test_per_pixel_mean_exact_values(monkeypatch):
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[:2] = 255  # half white, half black -> 0.5 everywhere ...
    images[:, 1, 0, 1] = torch.tensor([0, 51, 102, 255], dtype=torch.uint8)  # ... but here
    expected = torch.full((3, 2, 2), 0.5)
    expected[1, 0, 1] = 408 / (4 * 255)
    monkeypatch.setattr(device_loader_module, "_STATS_CHUNK", 3)  # sums across chunks
    mean = per_pixel_mean(images)
    assert mean.dtype == torch.float32 and mean.shape == (3, 2, 2)
    assert torch.equal(mean, expected)


def test_channel_stats_exact_values():
    images = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    images[0, 0] = 255  # channel 0: half 0, half 255 -> mean 0.5, std 0.5
    images[:, 1] = 51  # channel 1: constant -> std 0
    images[:, 2, :, 0] = 255  # channel 2: half -> 0.5 / 0.5
    mean, std = channel_stats(images)
    assert torch.equal(mean, torch.tensor([0.5, 0.2, 0.5]))
    assert torch.equal(std, torch.tensor([0.5, 0.0, 0.5]))


def test_statistics_reject_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        per_pixel_mean(torch.zeros(2, 3, 4, 4))


# ------------------------------------------------------------------------------ Normalization


def test_per_pixel_mean_normalization_exact_values():
    mean = [[[0.25, 0.5]], [[0.0, 1.0]], [[0.75, 0.125]]]  # (3, 1, 2), distinct per pixel
    norm = Normalization("per_pixel_mean", mean)
    batch = torch.tensor([[[[255, 0]], [[255, 0]], [[0, 255]]]], dtype=torch.uint8)
    out = norm.apply(batch, torch.float32)
    expected = torch.tensor([[[[0.75, -0.5]], [[1.0, -1.0]], [[-0.75, 0.875]]]])
    assert out.dtype == torch.float32 and torch.equal(out, expected)
    # Float input counts as already scaled to [0, 1].
    assert torch.equal(norm.apply(batch.float() / 255, torch.float32), expected)
    assert norm.apply(batch, torch.bfloat16).dtype == torch.bfloat16


def test_channel_mean_std_normalization_exact_values():
    norm = Normalization("channel_mean_std", [0.5, 0.25, 0.0], [0.5, 0.25, 1.0])
    batch = torch.full((2, 3, 2, 2), 255, dtype=torch.uint8)
    batch[1] = 0
    out = norm.apply(batch)
    assert torch.equal(out[0], torch.tensor([1.0, 3.0, 1.0]).view(3, 1, 1).expand(3, 2, 2))
    assert torch.equal(out[1], torch.tensor([-1.0, -1.0, 0.0]).view(3, 1, 1).expand(3, 2, 2))


def test_normalization_round_trips_through_dict_and_json():
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    for kind in ("per_pixel_mean", "channel_mean_std"):
        norm = Normalization.fit(images, kind)
        record = json.loads(json.dumps(norm.to_dict()))
        again = Normalization.from_dict(record)
        assert again == norm
        assert torch.equal(again.apply(images), norm.apply(images))
    assert torch.equal(torch.tensor(Normalization.fit(images).mean), per_pixel_mean(images))


def test_normalization_rejects_bad_records():
    with pytest.raises(DataError, match="per_pixel_mean"):
        Normalization("zca", [0.0])
    with pytest.raises(DataError, match=r"\(3, H, W\)"):
        Normalization("per_pixel_mean", [0.5, 0.5, 0.5])
    with pytest.raises(DataError, match="positive"):
        Normalization("channel_mean_std", [0.5] * 3, [0.0, 1.0, 1.0])
    with pytest.raises(DataError, match="kind"):
        Normalization.from_dict({"mean": [0.5] * 3})
    norm = Normalization("per_pixel_mean", torch.zeros(3, 32, 32).tolist())
    with pytest.raises(DataError, match="32x32"):
        norm.apply(torch.zeros(1, 3, 28, 28, dtype=torch.uint8))


# ------------------------------------------------------------------------------ DeviceLoader


N = 100


def _data() -> tuple[torch.Tensor, torch.Tensor, Normalization]:
    # Image i is the constant i, so a batch's images can be checked against its labels.
    labels = torch.arange(N)
    images = labels.to(torch.uint8).view(N, 1, 1, 1).expand(N, 3, 8, 8).contiguous()
    return images, labels, Normalization("channel_mean_std", [0.0] * 3, [1.0] * 3)


def _loader(train: bool = True, seed: int = 0, **kwargs) -> DeviceLoader:
    images, labels, norm = _data()
    return DeviceLoader(images, labels, batch_size=32, device="cpu", normalization=norm,
                        train=train, seed=seed, **kwargs)


def _epoch(loader: DeviceLoader, epoch: int, start: int = 0):
    return list(loader.epoch_batches(epoch, start))


def test_train_epoch_visits_every_image_once_without_drop_last():
    loader = _loader(drop_last=False)
    batches = _epoch(loader, 0)
    assert len(loader) == len(batches) == 4
    seen = torch.cat([y for _, y in batches])
    assert torch.equal(seen.sort().values, torch.arange(N))
    assert not torch.equal(seen, torch.arange(N)), "train order must be shuffled"


def test_train_drops_the_last_partial_batch_by_default():
    loader = _loader()
    batches = _epoch(loader, 0)
    assert len(loader) == loader.batches_per_epoch == len(batches) == 3
    assert all(len(y) == 32 for _, y in batches)
    assert len(torch.cat([y for _, y in batches]).unique()) == 96


def test_eval_is_in_order_unaugmented_and_complete():
    images, labels, norm = _data()
    loader = _loader(train=False)
    batches = _epoch(loader, 3)
    assert len(loader) == 4 and [len(y) for _, y in batches] == [32, 32, 32, 4]
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    assert torch.equal(torch.cat([x for x, _ in batches]), norm.apply(images))


def test_batches_match_labels_and_augmentation_only_crops_and_flips():
    for x, y in _epoch(_loader(), 0):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        values = y.float().div(255).view(-1, 1, 1, 1)
        # Constant images: every pixel is the image's own value or the zero padding.
        assert ((x == values) | (x == 0)).all()
    crops = torch.cat([x for x, _ in _epoch(_loader(), 0)])
    assert (crops == 0).any(), "pad 4 crops must show padding somewhere"
    plain = torch.cat([x for x, _ in _epoch(_loader(pad=0, flip=False), 0)])
    plain_labels = torch.cat([y for _, y in _epoch(_loader(pad=0, flip=False), 0)])
    assert torch.equal(plain, plain_labels.float().div(255).view(-1, 1, 1, 1).expand(-1, 3, 8, 8))


def test_same_seed_gives_identical_batches_and_other_seeds_or_epochs_differ():
    a, b = _loader(seed=11), _loader(seed=11)
    for epoch in (0, 1):
        for (xa, ya), (xb, yb) in zip(_epoch(a, epoch), _epoch(b, epoch), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    order = a.epoch_order(0)
    assert not torch.equal(order, a.epoch_order(1))
    assert not torch.equal(order, _loader(seed=12).epoch_order(0))


def test_resuming_at_start_reproduces_the_rest_of_the_epoch():
    loader = _loader()
    full = _epoch(loader, 5)
    for start in (0, 1, 2, 3):
        resumed = _epoch(_loader(), 5, start)
        assert len(resumed) == len(full) - start
        for (xr, yr), (xf, yf) in zip(resumed, full[start:], strict=True):
            assert torch.equal(xr, xf) and torch.equal(yr, yf)


def test_channels_last_and_dtype():
    x, _ = next(_loader(channels_last=True, dtype=torch.bfloat16).epoch_batches(0))
    assert x.dtype == torch.bfloat16
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_loader_rejects_bad_arguments():
    images, labels, norm = _data()
    with pytest.raises(DataError, match="batch"):
        DeviceLoader(images, labels, batch_size=101, device="cpu", normalization=norm,
                     train=True)
    with pytest.raises(ValueError, match="labels"):
        DeviceLoader(images, labels[:5], batch_size=8, device="cpu", normalization=norm,
                     train=False)
    with pytest.raises(ValueError, match="start"):
        next(_loader().epoch_batches(0, start=4))


def test_each_batch_draws_its_own_augmentation():
    # Identical images: batches can only differ through their crops and flips.
    images = torch.arange(3 * 8 * 8, dtype=torch.uint8).view(1, 3, 8, 8).repeat(64, 1, 1, 1)
    norm = Normalization("channel_mean_std", [0.0] * 3, [1.0] * 3)
    loader = DeviceLoader(images, torch.zeros(64, dtype=torch.int64), batch_size=16,
                          device="cpu", normalization=norm, train=True)
    first, second = (x for x, _ in list(loader.epoch_batches(0))[:2])
    assert not torch.equal(first, second)
    assert not torch.equal(first, next(loader.epoch_batches(1))[0])


def test_ranks_split_each_global_batch_disjointly():
    images = torch.arange(24 * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8)
    images = images.reshape(24, 3, 4, 4)
    labels = torch.arange(24)
    norm = Normalization("channel_mean_std", [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    kw = dict(batch_size=8, device="cpu", normalization=norm, train=True, seed=3, pad=1)
    single = list(DeviceLoader(images, labels, **kw).epoch_batches(2))
    ranks = [list(DeviceLoader(images, labels, rank=r, world_size=2, **kw).epoch_batches(2))
             for r in range(2)]
    for i, (x, y) in enumerate(single):
        (x0, y0), (x1, y1) = ranks[0][i], ranks[1][i]
        assert set(y0.tolist()).isdisjoint(y1.tolist())
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)
    with pytest.raises(ValueError, match="split evenly"):
        DeviceLoader(images, labels, rank=0, world_size=3, **kw)
