"""ImageNet-style folder data: files decoded per sample in worker processes, augmented with the
paper's ImageNet recipe (PAPER.md section 5), and served in an order that resumes exactly.

Three parts:

- `FolderDataset`: ``ROOT/<class>/<image>`` or ``ROOT/<split>/<class>/<image>`` through
  torchvision's `DatasetFolder` (file discovery, sorted classes); every file is decoded by the
  same PIL path as the in-memory sources (`resnets.data.decode`), so grayscale, CMYK, RGBA,
  palette and 16-bit files all become 8-bit RGB. Samples are uint8 ``(3, H, W)`` tensors.
- `train_transform` / `eval_transform`: the paper's augmentation as torchvision.transforms.v2
  pipelines (scale augmentation, random crop, flip, AlexNet PCA lighting, normalization).
- `ResumableSampler` and `make_loader`: a DataLoader whose training order is a seeded
  permutation per epoch, sliced per rank in distributed runs, that can start at any batch;
  every sample carries its own augmentation seed, so a batch is a pure function of
  (seed, epoch, batch index) whatever the number of workers or the resume point.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.datasets import DatasetFolder
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..errors import DataError

# The decode path of the in-memory sources, shared so that both read every file the same way:
# `decode_image_bytes` opens with PIL restricted to plain image formats and converts any mode
# to 8-bit RGB with `to_rgb8`.
from .decode import IMAGE_EXTENSIONS, decode_image_bytes, is_image_name
from .device_loader import mix_seed
from .files import UnreadableFile, read_file, walk_order, walk_tree, warn_skipped_links

__all__ = [
    "IMAGENET_EIGVAL",
    "IMAGENET_EIGVEC",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FolderDataset",
    "Lighting",
    "RandomShorterSide",
    "ResumableSampler",
    "eval_transform",
    "load_rgb",
    "make_loader",
    "set_loader_epoch",
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

# Folder names that mark a split level rather than classes.
_SPLIT_NAMES = ("train", "val", "test")
# Bad files in a row after which skip_bad_images gives up looking for a replacement.
_MAX_REPLACEMENTS = 64


# --------------------------------------------------------------------------------------------
# Decoding and the dataset


def load_rgb(path: str | os.PathLike) -> torch.Tensor:
    """Decode one image file into a uint8 ``(3, H, W)`` RGB tensor.

    Any PIL mode is converted to 8-bit RGB (16-bit grey is scaled, transparency is composited
    onto black). Only plain image formats are opened (JPEG, PNG, BMP, PPM/PGM, TIFF, WebP).

    Raises:
        DataError: the file cannot be read or decoded; the message names it.
    """
    try:
        # Only regular files of at most MAX_FILE_BYTES: a FIFO or a device would block or
        # never end.
        data = read_file(path)
        chw = decode_image_bytes(data, None)
    except UnreadableFile as err:
        raise DataError(f"Cannot decode the image {path}: {err}. Delete or replace the file, "
                        f"or (`resnets train` only) pass --skip-bad-images (skip_bad_images=True) "
                        f"to leave unreadable files out.") from err
    # PIL's buffer is read-only and (3, H, W) is a transposed view of it: copy once.
    return torch.from_numpy(np.ascontiguousarray(chw))


class FolderDataset(DatasetFolder):
    """An image-classification folder read lazily, one file per sample.

    Layout: ``ROOT/<class>/<image>``, or ``ROOT/<split>/<class>/<image>`` with ``split`` given
    (e.g. ``"train"`` / ``"val"`` for ImageNet). Classes are the sorted class folder names
    (label k is ``classes[k]``); images are files with an extension of `IMAGE_EXTENSIONS`,
    searched recursively inside each class folder and sorted. Hidden files and folders
    (names starting with ".") are ignored, so macOS ``._x.jpg`` forks never reach the decoder.
    Folder links are followed except those that loop or lead out of their class folder
    (skipped with a warning; see `resnets.data.files.walk_tree`).

    Items are ``(image, label)``: ``image`` is a uint8 ``(3, H, W)`` RGB tensor (see
    `load_rgb`) passed through ``transform`` when one is given; ``label`` an int.

    Args:
        root: the dataset folder.
        split: the split folder inside ``root``; None when ``root`` holds the classes.
        transform: applied to the uint8 image tensor, e.g. `train_transform()`.
        skip_bad_images: a file that cannot be decoded is warned about and replaced by the
            next decodable sample in dataset order (so batches keep their size and the sampler
            stays exact) instead of raising. The replaced files of a process are listed in
            ``self.skipped``.

    Raises:
        DataError: ``root`` or ``ROOT/split`` is missing, it has no class folders, or a class
            folder holds no images (the message names the folder).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        transform: Callable | None = None,
        skip_bad_images: bool = False,
    ) -> None:
        base = Path(root).expanduser()
        if not base.is_dir():
            what = "is not a folder" if base.exists() else "does not exist"
            raise DataError(f"Dataset folder {base} {what}. Expected ROOT/<class>/<image> or "
                            f"ROOT/<split>/<class>/<image>; check the --data path.")
        folder = base
        if split is not None:
            folder = base / split
            if not folder.is_dir():
                present = sorted(p.name for p in base.iterdir() if p.is_dir())
                raise DataError(f"{base} has no {split}/ folder (found: "
                                f"{', '.join(present) or 'no folders'}). Expected "
                                f"{base}/{split}/<class>/<image>.")
        self.split = split
        self.skip_bad_images = skip_bad_images
        self.skipped: list[str] = []
        # One walk (loop-safe, see walk_tree) gives both the classes and the files, in place
        # of torchvision's os.walk(followlinks=True), which never ends on a link loop.
        self._tree = walk_tree(folder, class_depth=1, stat_files=False)
        warn_skipped_links(folder, self._tree)
        super().__init__(str(folder), loader=load_rgb, transform=transform, allow_empty=True)
        del self._tree  # not needed any more; keeps worker pickles small
        counts = np.bincount(np.asarray(self.targets, dtype=np.int64),
                             minlength=len(self.classes))
        empty = [name for name, count in zip(self.classes, counts, strict=True) if count == 0]
        if empty:
            listed = ", ".join(str(folder / name) for name in empty[:5])
            more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            raise DataError(f"Class folder {listed}{more} contains no images "
                            f"({' '.join(IMAGE_EXTENSIONS)}). Add images or remove the folder.")

    def find_classes(self, directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
        """Sorted visible subfolders of ``directory``; refuses a root without any."""
        classes = sorted(name for name in self._tree.dirs if "/" not in name)
        if not classes:
            raise DataError(f"{directory} has no class folders. Expected <class>/<image> below "
                            f"it (ImageNet: ROOT/train/n01440764/*.JPEG).")
        if self.split is None and set(classes) <= set(_SPLIT_NAMES):
            raise DataError(f"{directory} holds split folders ({', '.join(classes)}), not "
                            f"classes: pass split= (e.g. split='train') to read one of them.")
        return classes, {name: i for i, name in enumerate(classes)}

    def make_dataset(self, directory: str | os.PathLike, class_to_idx: dict[str, int],
                     extensions: Any = None, is_valid_file: Any = None,
                     allow_empty: bool = False) -> list[tuple[str, int]]:
        """``(path, label)`` of every image file in a class folder, in torchvision's order
        (class by class, then folder by folder, then by name)."""
        samples = []
        for name in sorted(self._tree.files, key=walk_order):
            cls, sep, _ = name.partition("/")
            if sep and cls in class_to_idx and is_image_name(name):
                samples.append((os.path.join(directory, *name.split("/")), class_to_idx[cls]))
        return sorted(samples, key=lambda s: s[1])  # stable: keeps the order within a class

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        try:
            image = self.loader(path)
        except DataError:
            if not self.skip_bad_images:
                raise
            return self._replacement(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def _replacement(self, index: int) -> tuple[Any, int]:
        """The first decodable sample after ``index`` (wrapping), for skip_bad_images."""
        for step in range(_MAX_REPLACEMENTS):
            bad = self.samples[(index + step) % len(self)][0]
            if bad not in self.skipped:
                self.skipped.append(bad)
                warnings.warn(f"Skipping the unreadable image {bad}; a neighbouring sample "
                              f"takes its place.", stacklevel=3)
            candidate = (index + step + 1) % len(self)
            path, label = self.samples[candidate]
            try:
                image = self.loader(path)
            except DataError:
                continue
            if self.transform is not None:
                image = self.transform(image)
            return image, label
        raise DataError(f"{_MAX_REPLACEMENTS} unreadable images in a row from "
                        f"{self.samples[index][0]} on: is {self.root} really an image folder?")


# --------------------------------------------------------------------------------------------
# The paper's augmentation


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


# --------------------------------------------------------------------------------------------
# Order, resume and the DataLoader


class ResumableSampler(Sampler):
    """Sample indices of one epoch: a seeded permutation that can start anywhere.

    Training (``shuffle=True``): epoch e visits ``randperm(n)`` drawn from a generator seeded
    with mix(seed, e), a hash (as in `DeviceLoader`; ``seed + e`` would make run 1's epoch 0
    run 0's epoch 1). With ``world_size`` > 1 the permutation is first padded with its own
    head to a multiple of ``world_size`` (as DistributedSampler does, so every rank runs the
    same number of steps) and rank r takes positions ``r::world_size``. Evaluation
    (``shuffle=False``): ``range(n)`` in order, sliced the same way but not padded by default,
    so that no image is counted twice.

    ``start`` skips the first ``start`` indices of this rank's sequence: a run resumed at batch
    k passes ``start = k * batch_size`` and sees exactly the tail of the uninterrupted epoch.

    With ``with_seeds=True`` each item is ``(index, sample_seed)``, where the seed belongs to
    the position in the global (padded) permutation and is drawn from mix(seed, e, 1); a
    `make_loader` loader runs the transform of that sample under this seed, which makes the
    augmentation independent of worker count, world size and resume point.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pad: bool | None = None,
        with_seeds: bool = False,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = shuffle if pad is None else pad
        self.with_seeds = with_seeds
        self.set_epoch(epoch, start)

    @property
    def rank_length(self) -> int:
        """Indices of this rank in a whole epoch (before `start` is skipped)."""
        if self.pad:
            return -(-self.num_samples // self.world_size)
        return len(range(self.rank, self.num_samples, self.world_size))

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Move to ``epoch``, skipping its first ``start`` indices (of this rank)."""
        if epoch < 0 or not 0 <= start <= self.rank_length:
            raise ValueError(f"need epoch >= 0 and 0 <= start <= {self.rank_length}, got "
                             f"epoch {epoch}, start {start}")
        self.epoch, self.start = epoch, start

    def global_order(self) -> torch.Tensor:
        """All ranks' indices of the current epoch, int64, padded when ``pad``."""
        n = self.num_samples
        if self.shuffle:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        if self.pad and n % self.world_size:
            extra = self.world_size - n % self.world_size
            order = torch.cat([order, order.repeat(-(-extra // n))[:extra]])
        return order

    def rank_order(self) -> torch.Tensor:
        """This rank's indices of the current epoch, before `start` is skipped."""
        return self.global_order()[self.rank::self.world_size]

    def sample_seeds(self) -> torch.Tensor:
        """This rank's per-sample augmentation seeds, aligned with `rank_order`."""
        total = self.rank_length * self.world_size if self.pad else self.num_samples
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 1))
        seeds = torch.randint(0, 2**62, (total,), generator=generator)
        return seeds[self.rank::self.world_size]

    def __iter__(self) -> Iterator:
        order = self.rank_order()[self.start:].tolist()
        if not self.with_seeds:
            return iter(order)
        return zip(order, self.sample_seeds()[self.start:].tolist(), strict=True)

    def __len__(self) -> int:
        return self.rank_length - self.start


class _Seeded(Dataset):
    """Serve ``dataset[index]`` for keys ``(index, seed)``, running it under ``seed``.

    torch's default CPU generator (the one every v2 random transform draws from) is seeded
    per sample and restored afterwards, so with ``workers=0`` the caller's random state is
    left untouched. Only that generator is touched: ``torch.manual_seed`` would also seed
    every accelerator and costs 50 times more per sample.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker with base_seed + worker_id (base_seed drawn from the loader's
    # generator, itself seeded from (seed, epoch)); numpy is not seeded by torch, so do it here
    # for user transforms that draw from numpy.
    np.random.seed(torch.initial_seed() % 2**32)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    workers: int = 4,
    distributed: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    prefetch_factor: int = 4,
    drop_last: bool | None = None,
) -> DataLoader:
    """A DataLoader over a map-style dataset (e.g. `FolderDataset`) with exact resume.

    Order: a `ResumableSampler` (shuffled per epoch in training, in order otherwise),
    starting at batch ``start_batch`` of ``epoch``. Randomness: sample i of the epoch runs its
    transform under its own seed (see `ResumableSampler`), so a batch is a pure function of
    (seed, epoch, batch index) for any ``workers`` and resume point; worker processes are
    also seeded from (seed, epoch, worker id) through the loader's generator.

    Args:
        dataset: items ``(image, label)``; transforms must draw from torch's generator.
        batch_size: images per batch (per rank when distributed).
        train: shuffle and drop the last incomplete batch (True), or keep order and every
            image (False).
        seed, epoch, start_batch: where the order starts; ``start_batch`` counts this
            loader's batches, so a resumed run passes the number of steps done in the epoch.
        workers: decoding processes (0: decode in the calling process).
        distributed: slice the epoch per rank; ``rank`` / ``world_size`` default to those of
            the initialized torch.distributed process group.
        prefetch_factor: batches loaded ahead per worker.
        drop_last: override the default (= ``train``).

    Pinned memory is used when CUDA is available; workers persist across epochs. To go on to
    the next epoch with the same loader (and workers), call `set_loader_epoch`.
    """
    if batch_size < 1 or workers < 0:
        raise ValueError(f"need batch_size >= 1 and workers >= 0, got {batch_size}, {workers}")
    if distributed:
        if rank is None or world_size is None:
            if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
                raise ValueError("distributed=True needs rank and world_size, or an "
                                 "initialized torch.distributed process group")
            rank = torch.distributed.get_rank() if rank is None else rank
            world_size = torch.distributed.get_world_size() if world_size is None else world_size
    else:
        rank, world_size = 0, 1
    sampler = ResumableSampler(len(dataset), shuffle=train, seed=seed, epoch=epoch,
                               start=0, rank=rank, world_size=world_size, with_seeds=True)
    loader = DataLoader(
        _Seeded(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=train if drop_last is None else drop_last,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch_factor if workers > 0 else None,
        worker_init_fn=_seed_worker if workers > 0 else None,
        generator=torch.Generator().manual_seed(mix_seed(seed, epoch, 2)),
    )
    set_loader_epoch(loader, epoch, start_batch)
    return loader


def set_loader_epoch(loader: DataLoader, epoch: int, start_batch: int = 0) -> None:
    """Point a `make_loader` loader at batch ``start_batch`` of ``epoch`` (call before
    iterating it again); the persistent workers are reused."""
    sampler = loader.sampler
    if not isinstance(sampler, ResumableSampler):
        raise TypeError("set_loader_epoch needs a loader built by make_loader")
    batches = (sampler.rank_length // loader.batch_size if loader.drop_last
               else -(-sampler.rank_length // loader.batch_size))
    if not 0 <= start_batch <= batches:
        raise ValueError(f"start_batch must be in 0..{batches} (batches per epoch), got "
                         f"{start_batch}")
    sampler.set_epoch(epoch, min(start_batch * loader.batch_size, sampler.rank_length))
