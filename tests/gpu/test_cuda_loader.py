"""The device-resident loader on CUDA: data and batches live on the GPU, normalization equals
the CPU's, and augmentation is the documented function of (seed, epoch, batch index) with the
draws of a generator on the loader's device.

CUDA and CPU generators give different numbers for the same seed, so a CUDA train batch is
not the CPU train batch: it is the CPU-normalized images of the same indices, cropped and
flipped at the offsets that a CUDA generator seeded with mix(seed, epoch, i) draws. That is
what these tests rebuild on the CPU and compare with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from resnets.data import DeviceLoader, Normalization, channel_stats, per_pixel_mean
from resnets.data.device_loader import mix_seed

N, B, PAD, SEED = 96, 32, 4, 5


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=g)
    return images, torch.arange(N) % 10


def _loader(device: str, train: bool, **kwargs) -> DeviceLoader:
    images, labels = _images()
    norm = Normalization.fit(images)  # per-pixel mean, measured on the CPU
    return DeviceLoader(images, labels, batch_size=B, device=device, normalization=norm,
                        train=train, seed=SEED, pad=PAD, **kwargs)


def _expected_cuda_batch(epoch: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch i of `epoch` of the CUDA train loader, rebuilt on the CPU from its definition."""
    images, labels = _images()
    norm = Normalization.fit(images)
    order = torch.randperm(N, generator=torch.Generator().manual_seed(mix_seed(SEED, epoch)))
    index = order[i * B:(i + 1) * B]
    x = norm.apply(images[index])  # (B, 3, 32, 32) float32, on the CPU
    g = torch.Generator(device="cuda").manual_seed(mix_seed(SEED, epoch, i))
    dy, dx = torch.randint(0, 2 * PAD + 1, (2, B), generator=g, device="cuda").cpu()
    flip = (torch.rand(B, generator=g, device="cuda") < 0.5).cpu()
    padded = F.pad(x, (PAD,) * 4)
    out = torch.stack([padded[k, :, dy[k]:dy[k] + 32, dx[k]:dx[k] + 32] for k in range(B)])
    out = torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
    return out, labels[index]


def test_statistics_on_cuda_equal_the_cpu_ones():
    images, _ = _images()
    assert torch.equal(per_pixel_mean(images.cuda()).cpu(), per_pixel_mean(images))
    for got, want in zip(channel_stats(images.cuda()), channel_stats(images), strict=True):
        assert got.is_cuda
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=1e-7)


def test_eval_batches_live_on_cuda_and_equal_the_cpu_batches():
    cuda, cpu = _loader("cuda", train=False), _loader("cpu", train=False)
    assert cuda.images.is_cuda and cuda.images.dtype == torch.uint8
    pairs = list(zip(cuda.epoch_batches(0), cpu.epoch_batches(0), strict=True))
    assert len(pairs) == 3
    for (xg, yg), (xc, yc) in pairs:
        assert xg.is_cuda and yg.is_cuda and xg.dtype == torch.float32
        assert torch.equal(yg.cpu(), yc)
        # x / 255 - mean: the same IEEE operations on both devices.
        torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-6)
        assert float(xc.abs().max()) > 0.3  # real images, not a zero batch


def test_train_batches_are_the_documented_function_of_seed_epoch_and_index():
    loader = _loader("cuda", train=True)
    assert torch.equal(loader.epoch_order(1).cpu(), _loader("cpu", train=True).epoch_order(1))
    for epoch in (0, 1):
        for i, (x, y) in enumerate(loader.epoch_batches(epoch)):
            assert x.is_cuda and y.is_cuda and x.shape == (B, 3, 32, 32)
            want_x, want_y = _expected_cuda_batch(epoch, i)
            assert torch.equal(y.cpu(), want_y)
            torch.testing.assert_close(x.cpu(), want_x, rtol=0, atol=1e-6)
    crops = torch.cat([x for x, _ in loader.epoch_batches(0)])
    assert bool((crops == 0).any()), "pad-4 crops must show (zero) padding somewhere"


def test_same_seed_same_batches_and_resume_mid_epoch():
    a, b = _loader("cuda", train=True), _loader("cuda", train=True)
    full = list(a.epoch_batches(2))
    for (xa, ya), (xb, yb) in zip(full, b.epoch_batches(2), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    resumed = list(b.epoch_batches(2, start=1))
    assert len(resumed) == len(full) - 1
    for (xr, yr), (xf, yf) in zip(resumed, full[1:], strict=True):
        assert torch.equal(xr, xf) and torch.equal(yr, yf)
    assert not torch.equal(full[0][0], full[1][0])


def test_bf16_channels_last_batches_are_the_fp32_batches_rounded():
    fp32 = _loader("cuda", train=True)
    bf16 = _loader("cuda", train=True, dtype=torch.bfloat16, channels_last=True)
    for (x32, y32), (x16, y16) in zip(fp32.epoch_batches(0), bf16.epoch_batches(0),
                                      strict=True):
        assert x16.dtype == torch.bfloat16 and x16.is_cuda
        assert x16.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(y16, y32)
        # Normalized in fp32, cast once; crops and flips only move values.
        assert torch.equal(x16, x32.to(torch.bfloat16))
