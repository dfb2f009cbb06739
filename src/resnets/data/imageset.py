"""`ImageSet`, what every in-memory source ends as, the layouts `load_image_set` accepts, and
the seeded train/validation split."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import DataError
from .decode import IMAGE_EXTENSIONS

__all__ = ["ACCEPTED_LAYOUTS", "SPLITS", "ImageSet", "labels_in_range", "split_indices"]

ACCEPTED_LAYOUTS = """Accepted --data layouts:
  - no --data: CIFAR-10 is downloaded with torchvision into <cache>/torchvision
  - the CIFAR-10 python release: cifar-10-python.tar.gz, its cifar-10-batches-py/ folder
    (data_batch_1..5, test_batch, optional batches.meta), or a folder containing it
  - an image folder ROOT/<class>/<image> or ROOT/<split>/<class>/<image> (split: train, test;
    images: """ + " ".join(IMAGE_EXTENSIONS) + """)
  - a .tar, .tar.gz/.tgz or .tar.xz archive of such an image folder"""

# The splits a source may hold; an image folder with one of these folders is split by them.
SPLITS = ("train", "test")


@dataclass
class ImageSet:
    """A whole labelled split held in memory."""

    images: torch.Tensor  # (N, 3, H, W) uint8, every image the same size
    labels: torch.Tensor  # (N,) int64, indices into `classes`
    classes: list[str]  # class names; label k is classes[k]
    source: str  # where the images came from, for logs and run records
    skipped: list[str] = field(default_factory=list)  # unreadable files left out
    digest: str | None = None  # sha256 of classes, labels and pixels (`fingerprint.py`)
    origin: dict | None = None  # the source's kind, name and size, for fingerprints

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"ImageSet.images must be uint8 (N, 3, H, W), got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"ImageSet.labels must be int64 ({self.images.shape[0]},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]


def labels_in_range(labels: torch.Tensor, num_classes: int) -> bool:
    """Whether every label indexes one of ``num_classes`` classes (true when there are none)."""
    return labels.numel() == 0 or (int(labels.min()) >= 0 and int(labels.max()) < num_classes)


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split range(n) at random into (train_idx, val_idx), e.g. the paper's 45k/5k split.

    The split is a pure function of (n, val_size, seed). Both index tensors are int64 and
    sorted, so a subset keeps the source order and the loader's per-epoch shuffle is the only
    shuffle. ``val_size=0`` gives every index to train and an empty validation set.
    """
    if not 0 <= val_size <= n:
        raise DataError(f"Cannot hold out {val_size} validation images from a set of {n}: "
                        f"the validation split (val_split) must be between 0 and {n}.")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values
