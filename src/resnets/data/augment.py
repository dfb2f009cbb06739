"""The paper's ImageNet augmentation (PAPER.md section 5) as torchvision.transforms.v2 pipelines:
scale augmentation, random crop, flip, AlexNet PCA lighting and normalization for training;
resize and center crop for evaluation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "IMAGENET_EIGVAL",
    "IMAGENET_EIGVEC",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Lighting",
    "RandomShorterSide",
    "eval_transform",
    "train_transform",
]

# Per-channel statistics of the ImageNet training set in [0, 1] units (the usual published
# values). The paper subtracts the per-pixel mean image instead; see `train_transform`.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PCA of the RGB pixel covariance of ImageNet ([0, 1] units), as used for AlexNet's lighting
# noise: eigenvalues, and the eigenvectors as the *columns* of the matrix.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class RandomShorterSide(torch.nn.Module):
    """Resize so that the shorter side is an integer drawn uniformly from [lo, hi].

    The paper's scale augmentation ("shorter side randomly sampled in [256, 480]"). The aspect
    ratio is kept: the longer side becomes ``int(s * long / short)``. Written here rather than
    using ``v2.RandomShortestSize``, which scales both sides by ``s / short`` and truncates, so
    its shorter side comes out as ``s - 1`` for some sizes (e.g. 21 pixels resized to 345).

    Works on uint8 or float tensors ``(..., C, H, W)`` (antialiased bilinear) and PIL images;
    draws from torch's global generator.
    """

    def __init__(self, lo: int, hi: int, antialias: bool = True) -> None:
        super().__init__()
        if not 1 <= lo <= hi:
            raise ValueError(f"need 1 <= lo <= hi, got scale range ({lo}, {hi})")
        self.lo, self.hi, self.antialias = lo, hi, antialias

    def forward(self, image: Any) -> Any:
        size = int(torch.randint(self.lo, self.hi + 1, ()))
        return TF.resize(image, [size], antialias=self.antialias)

    def extra_repr(self) -> str:
        return f"lo={self.lo}, hi={self.hi}"


class Lighting(torch.nn.Module):
    """AlexNet's PCA lighting noise (Krizhevsky et al. 2012, section 4.1).

    Each image gets one RGB offset ``eigvec @ (alpha * eigval)`` with ``alpha ~ N(0, std^2)``
    per principal component, added to every pixel. The offset therefore has mean 0 and
    covariance ``eigvec diag((std * eigval)^2) eigvec^T``. Input: float images in [0, 1] units
    (where the ImageNet eigenvalues were measured), ``(3, H, W)`` or a batch ``(B, 3, H, W)``
    with one draw per image. No clamping, as in the reference implementations.
    """

    def __init__(self, std: float = 0.1, eigval: Sequence[float] = IMAGENET_EIGVAL,
                 eigvec: Sequence[Sequence[float]] = IMAGENET_EIGVEC) -> None:
        super().__init__()
        if std < 0:
            raise ValueError(f"lighting std must be >= 0, got {std}")
        self.std = std
        self.register_buffer("eigval", torch.tensor(eigval, dtype=torch.float32), False)
        self.register_buffer("eigvec", torch.tensor(eigvec, dtype=torch.float32), False)

    def offsets(self, n: int) -> torch.Tensor:
        """``n`` RGB offsets, (n, 3), drawn from torch's global generator."""
        alpha = torch.randn(n, 3) * self.std  # (n, 3)
        return (alpha * self.eigval) @ self.eigvec.T  # row i: eigvec @ (alpha_i * eigval)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.std == 0:
            return image
        if not image.is_floating_point() or image.shape[-3] != 3:
            raise ValueError(f"Lighting needs float RGB images (..., 3, H, W) in [0, 1] units, "
                             f"got {image.dtype} {tuple(image.shape)}")
        batch = image.shape[:-3]
        rgb = self.offsets(math.prod(batch)).to(image.device, image.dtype)
        return image + rgb.reshape(*batch, 3, 1, 1)

    def extra_repr(self) -> str:
        return f"std={self.std}"


def train_transform(
    crop: int = 224,
    scale: tuple[int, int] = (256, 480),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    lighting: float = 0.1,
) -> v2.Compose:
    """The paper's ImageNet training augmentation (PAPER.md section 5) for uint8 images.

    1. shorter side resized to a random integer in ``scale`` (`RandomShorterSide`);
    2. a random ``crop`` x ``crop`` window;
    3. horizontal flip with probability 0.5;
    4. uint8 -> float in [0, 1];
    5. AlexNet PCA lighting noise with std ``lighting`` (`Lighting`; 0 disables it);
    6. ``(x - mean) / std`` per channel.

    Input: a uint8 ``(3, H, W)`` tensor (what `FolderDataset` yields) or a PIL image.
    Cropping and flipping run on uint8, so only the crop is converted to float. Lighting comes
    before normalization because the eigenvalues are in [0, 1] pixel units (fb.resnet.torch
    orders them the same way).

    Deviation from the paper: it subtracts the per-pixel mean image; here, as in
    fb.resnet.torch (Facebook's re-implementation) and torchvision, the per-channel ImageNet
    mean is subtracted and the result divided by the per-channel std (`IMAGENET_MEAN`,
    `IMAGENET_STD`).

    Smaller sizes serve tests and small data, e.g. ``train_transform(32, (32, 60))``.
    """
    lo, hi = scale
    if lo < crop:
        raise ValueError(f"the shorter side range {scale} must start at the crop size {crop} or "
                         f"above, or the crop would not fit")
    return v2.Compose([
        v2.PILToTensor(),  # PIL -> uint8 tensor; tensors pass (plain: tv_tensors cost more)
        RandomShorterSide(lo, hi),
        v2.RandomCrop(crop),
        v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True),
        Lighting(lighting),
        v2.Normalize(list(mean), list(std)),
    ])


def eval_transform(
    crop: int = 224,
    resize: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Single center-crop view: shorter side resized to ``resize``, the central ``crop`` x
    ``crop`` window, float, per-channel normalization (see `train_transform`). The other test
    protocols (10-crop, multi-scale) are in `resnets.eval.protocols`."""
    if resize < crop:
        raise ValueError(f"resize ({resize}) must be at least the crop size ({crop})")
    return v2.Compose([
        v2.PILToTensor(),  # PIL -> uint8 tensor; tensors pass (plain: tv_tensors cost more)
        v2.Resize(resize, antialias=True),
        v2.CenterCrop(crop),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ])
