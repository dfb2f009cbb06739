"""ImageNet-style folder data: files decoded per sample in worker processes, augmented with the
paper's ImageNet recipe (PAPER.md section 5), and served in an order that resumes exactly.

Three parts, each in its module:

- `FolderDataset` (here): ``ROOT/<class>/<image>`` or ``ROOT/<split>/<class>/<image>`` through
  torchvision's `DatasetFolder` (file discovery, sorted classes); every file is decoded by the
  same PIL path as the in-memory sources (`resnets.data.decode`), so grayscale, CMYK, RGBA,
  palette and 16-bit files all become 8-bit RGB. Samples are uint8 ``(3, H, W)`` tensors.
- `train_transform` / `eval_transform` (`resnets.data.augment`): the paper's augmentation as
  torchvision.transforms.v2 pipelines (scale augmentation, random crop, flip, AlexNet PCA
  lighting, normalization).
- `ResumableSampler` and `make_loader` (`resnets.data.resumable_loader`): a DataLoader whose
  training order is a seeded permutation per epoch, sliced per rank in distributed runs, that
  can start at any batch; every sample carries its own augmentation seed, so a batch is a
  pure function of (seed, epoch, batch index) whatever the number of workers or the resume
  point.

The names of all three stay importable from here, as the folder pipeline's one entry point.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.datasets import DatasetFolder

from ..errors import DataError
from .augment import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Lighting,
    RandomShorterSide,
    eval_transform,
    train_transform,
)

# The decode path of the in-memory sources, shared so that both read every file the same way:
# `decode_image_bytes` opens with PIL restricted to plain image formats and converts any mode
# to 8-bit RGB with `to_rgb8`.
from .decode import IMAGE_EXTENSIONS, decode_image_bytes, is_image_name
from .files import UnreadableFile, read_file, walk_order, walk_tree, warn_skipped_links
from .resumable_loader import ResumableSampler, make_loader, set_loader_epoch

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

# Folder names that mark a split level rather than classes.
_SPLIT_NAMES = ("train", "val", "test")
# Bad files in a row after which skip_bad_images gives up looking for a replacement.
_MAX_REPLACEMENTS = 64


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
