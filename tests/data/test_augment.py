"""The paper's ImageNet augmentation: scale augmentation, crops and flips, lighting noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from resnets.data.augment import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    Lighting,
    RandomShorterSide,
    eval_transform,
    train_transform,
)

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
