"""Load CIFAR-10 (or any small image-classification set) into memory as one uint8 tensor.

Every source ends as an `ImageSet`: all images as a (N, 3, H, W) uint8 tensor plus int64
labels, which `DeviceLoader` moves to the accelerator once. Accepted sources:

1. ``None``: torchvision downloads CIFAR-10 into ``<cache>/torchvision``.
2. The official CIFAR-10 python release: ``cifar-10-python.tar.gz``, its
   ``cifar-10-batches-py/`` folder, or a folder containing that folder.
3. An image folder ``ROOT/<class>/<image>`` or ``ROOT/<split>/<class>/<image>``.
4. A ``.tar``, ``.tar.gz``/``.tgz`` or ``.tar.xz`` archive of such an image folder, read
   straight from the archive (nothing is extracted).

Sources 2-4 are decoded once and saved to ``<cache>/decoded/<key>.safetensors``; later calls
load that file instead of decoding again.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import pickle
import posixpath
import stat
import tarfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from ..errors import DataError

__all__ = [
    "ACCEPTED_LAYOUTS",
    "CIFAR10_CLASSES",
    "IMAGE_EXTENSIONS",
    "MAX_FILE_BYTES",
    "ImageSet",
    "default_cache_dir",
    "list_files",
    "load_image_set",
    "split_indices",
]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

# Same list as torchvision's ImageFolder, so a tree that works there works here.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# The PIL decoders for those extensions, and only those: a file is never handed to a plugin
# such as EPS, which runs Ghostscript. Naming them also skips PIL's probing of every plugin.
_PIL_FORMATS = ("JPEG", "PNG", "BMP", "PPM", "TIFF", "WEBP")

ACCEPTED_LAYOUTS = """Accepted --data layouts:
  - no --data: CIFAR-10 is downloaded with torchvision into <cache>/torchvision
  - the CIFAR-10 python release: cifar-10-python.tar.gz, its cifar-10-batches-py/ folder
    (data_batch_1..5, test_batch, optional batches.meta), or a folder containing it
  - an image folder ROOT/<class>/<image> or ROOT/<split>/<class>/<image> (split: train, test;
    images: """ + " ".join(IMAGE_EXTENSIONS) + """)
  - a .tar, .tar.gz/.tgz or .tar.xz archive of such an image folder"""

SPLITS = ("train", "test")

# The largest single file read into memory, from a folder or an archive. A CIFAR-10 python
# batch is 31 MB and an ImageNet JPEG rarely 1 MB; the cap keeps a hostile archive (a sparse
# 1 GiB member compresses to a few kB) from taking the machine's memory.
MAX_FILE_BYTES = 64 * 2**20

# Bump when decoding changes so that caches written by older code are not reused.
_CACHE_FORMAT = 1
_CACHE_METADATA_KEY = "resnets.imageset"

_OFFICIAL_DIRNAME = "cifar-10-batches-py"
_OFFICIAL_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_OFFICIAL_META = "batches.meta"
_OFFICIAL_NAMES = frozenset(_OFFICIAL_BATCHES["train"] + _OFFICIAL_BATCHES["test"]
                            + (_OFFICIAL_META,))


@dataclass
class ImageSet:
    """A whole labelled split held in memory."""

    images: torch.Tensor  # (N, 3, H, W) uint8, every image the same size
    labels: torch.Tensor  # (N,) int64, indices into `classes`
    classes: list[str]  # class names; label k is classes[k]
    source: str  # where the images came from, for logs and run records
    skipped: list[str] = field(default_factory=list)  # unreadable files left out

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"ImageSet.images must be uint8 (N, 3, H, W), got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"ImageSet.labels must be int64 ({self.images.shape[0]},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices: torch.Tensor) -> ImageSet:
        """The images at `indices` (e.g. one side of `split_indices`), with the same classes."""
        return ImageSet(self.images[indices], self.labels[indices], list(self.classes),
                        self.source, list(self.skipped))


def default_cache_dir() -> Path:
    """Where downloads and decoded tensors go: $RESNETS_CACHE, else ~/.cache/resnets."""
    env = os.environ.get("RESNETS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "resnets"


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


def load_image_set(
    source: str | os.PathLike | None,
    *,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    skip_bad_images: bool = False,
    image_size: int | None = 32,
) -> ImageSet:
    """Load one split of an image-classification set as uint8 tensors.

    Args:
        source: None to download CIFAR-10 with torchvision, else a path in one of the
            layouts of `ACCEPTED_LAYOUTS`.
        split: "train" or "test".
        cache_dir: torchvision downloads and decoded tensors; default
            `default_cache_dir()`.
        download: with ``source=None``, allow torchvision to download.
        skip_bad_images: leave out (and warn about) files of an image folder that cannot be
            decoded instead of failing; they are listed in ``ImageSet.skipped``.
        image_size: resize (bilinear, aspect ratio not kept) every image whose size is not
            image_size x image_size; None keeps the stored sizes, which must then all agree.

    Raises:
        DataError: the path is missing, in no accepted layout, or holds unreadable data.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown split {split!r}: expected one of {', '.join(SPLITS)}.")
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be a positive number of pixels, got {image_size}.")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if source is None:
        return _load_torchvision(cache, split, download, image_size)
    if str(source) == "":
        raise DataError("--data is an empty path. Give the dataset path, or leave --data out "
                        "to download CIFAR-10.\n" + ACCEPTED_LAYOUTS)

    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"Dataset path {path} does not exist. Check the --data path.\n"
                        + ACCEPTED_LAYOUTS)
    path = path.resolve()
    if not path.is_dir() and not path.is_file():
        # Checked before any open: reading a FIFO would block until someone writes to it.
        raise DataError(f"Dataset path {path} is {_file_kind(path.stat().st_mode)}, not a "
                        f"folder or a regular file. Check the --data path.\n"
                        + ACCEPTED_LAYOUTS)

    tree = None
    if path.is_dir():
        # One walk serves both the cache key and the decoding, so both see the same files.
        tree = _walk_tree(path, class_depth=2 if any((path / s).is_dir() for s in SPLITS)
                          else 1)
        _warn_skipped_links(path, tree)
    key = _cache_key(path, tree, split, image_size, skip_bad_images)
    cache_file = cache / "decoded" / f"{key}.safetensors"
    image_set = _read_cache(cache_file)
    if image_set is None:
        image_set = _decode_source(path, tree, split, skip_bad_images, image_size)
        _write_cache(cache_file, image_set)
    # Name the data as the user did (a relative path stays relative in logs and reports).
    image_set.source = image_set.source.replace(str(path), str(source))
    if image_set.skipped:
        # Repeated on cache hits too: every run should say that its data has holes.
        warnings.warn(f"Skipped {len(image_set.skipped)} unreadable image(s) in "
                      f"{image_set.source}, e.g. {', '.join(image_set.skipped[:3])}",
                      stacklevel=2)
    return image_set


def _decode_source(path: Path, tree: _Tree | None, split: str, skip_bad_images: bool,
                   image_size: int | None) -> ImageSet:
    """Decode a path source (layouts 2-4) without looking at the decoded cache; ``tree`` is
    the `_walk_tree` of a folder ``path``."""
    if tree is not None:
        official = _find_official_dir(path)
        if official is not None:
            return _load_official(_read_official_dir(official, split), split, image_size,
                                  f"CIFAR-10 python release {official} ({split} split)")
        return _decode_image_folder(path, tree, split, image_size, skip_bad_images)
    if not tarfile.is_tarfile(path):
        raise DataError(f"{path} is a file but not a tar archive. Point --data at a folder or a "
                        f".tar/.tar.gz/.tar.xz archive (unpack .zip files first).\n"
                        + ACCEPTED_LAYOUTS)
    if _archive_layout(path) == "official":
        return _load_official(_read_official_tar(path, split), split, image_size,
                              f"CIFAR-10 python release {path} ({split} split)")
    return _decode_image_archive(path, split, image_size, skip_bad_images)


# --------------------------------------------------------------------------------------------
# 1. torchvision download


def _load_torchvision(cache: Path, split: str, download: bool,
                      image_size: int | None) -> ImageSet:
    from torchvision.datasets import CIFAR10

    root = cache / "torchvision"
    try:
        dataset = CIFAR10(root=str(root), train=split == "train", download=download)
    except Exception as err:  # network, disk and integrity failures all end here
        what = "download of CIFAR-10 failed" if download else "CIFAR-10 is not in the cache"
        raise DataError(
            f"The torchvision {what} ({root}): {type(err).__name__}: {err}. If this machine "
            f"is offline, fetch cifar-10-python.tar.gz on another one, copy it here and pass "
            f"it with --data PATH.\n" + ACCEPTED_LAYOUTS
        ) from err
    images = torch.from_numpy(np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2)))
    return ImageSet(_resize_tensor(images, image_size),
                    torch.tensor(dataset.targets, dtype=torch.int64), list(dataset.classes),
                    f"torchvision CIFAR10 in {root} ({split} split)")


# --------------------------------------------------------------------------------------------
# 2. The official python release


def _numpy_global(module: str, name: str) -> object:
    # numpy 2 moved numpy.core to numpy._core; old pickles name the old place.
    for candidate in (module.replace("numpy.core", "numpy._core"), module):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"{module}.{name} is not available in this numpy")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays, numpy scalars and plain containers.

    Unpickling calls whatever function the file names, so an unrestricted load of a
    downloaded file would run code chosen by its author. The CIFAR batches only need the
    globals below; anything else is refused.
    """

    _ALLOWED = frozenset({
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    })

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "_codecs":
            return importlib.import_module("codecs").encode
        return _numpy_global(module, name)


def _unpickle(stream: BinaryIO, shown: str) -> dict:
    """Load one official batch or meta file, allowing numpy arrays only."""
    try:
        obj = _ArrayOnlyUnpickler(stream, encoding="bytes").load()
    except Exception as err:  # a corrupt pickle can fail in many ways; all are bad input
        raise DataError(
            f"{shown} is not a readable CIFAR-10 batch ({type(err).__name__}: {err}). The "
            f"python release holds pickled dicts of numpy arrays only; re-download "
            f"cifar-10-python.tar.gz or point --data elsewhere.") from err
    if not isinstance(obj, dict):
        raise DataError(f"{shown} holds a {type(obj).__name__}, expected the dict of a CIFAR-10 "
                        f"batch. Re-download cifar-10-python.tar.gz.")
    # Python 2 wrote byte-string keys; a batch re-saved by Python 3 may use str keys.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _find_official_dir(path: Path) -> Path | None:
    """The folder holding the official batch files, if `path` is or contains one."""
    for candidate in (path, path / _OFFICIAL_DIRNAME):
        if candidate.is_dir() and any((candidate / name).is_file() for name in _OFFICIAL_NAMES
                                      if name != _OFFICIAL_META):
            return candidate
    return None


def _read_official_dir(folder: Path, split: str) -> dict[str, dict]:
    batches = {}
    for name in _OFFICIAL_BATCHES[split] + (_OFFICIAL_META,):
        file = folder / name
        if file.is_file():
            try:
                data = _read_file(file)
            except _BadImage as err:
                raise DataError(f"Cannot read {file}: {err}. Re-extract "
                                f"cifar-10-python.tar.gz.") from err
            batches[name] = _unpickle(io.BytesIO(data), str(file))
    _require_batches(batches, split, str(folder))
    return batches


def _read_official_tar(archive: Path, split: str) -> dict[str, dict]:
    batches = {}
    wanted = _OFFICIAL_BATCHES[split] + (_OFFICIAL_META,)
    # Iterating in archive order reads a .tar.gz in one pass; random access would re-inflate.
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = posixpath.basename(member.name.rstrip("/"))
            if member.isfile() and name in wanted and name not in batches:
                if member.size > MAX_FILE_BYTES:
                    raise DataError(f"The archive member {archive}:{member.name} is "
                                    f"{_too_large(member.size, MAX_FILE_BYTES)}; a CIFAR-10 "
                                    f"batch is 31 MB. Re-download cifar-10-python.tar.gz.")
                stream = tar.extractfile(member)
                assert stream is not None  # regular files always have a stream
                batches[name] = _unpickle(io.BytesIO(stream.read()), f"{archive}:{member.name}")
    _require_batches(batches, split, str(archive))
    return batches


def _require_batches(batches: dict[str, dict], split: str, shown: str) -> None:
    missing = [name for name in _OFFICIAL_BATCHES[split] if name not in batches]
    if missing:
        raise DataError(
            f"{shown} looks like the CIFAR-10 python release but lacks {', '.join(missing)} "
            f"needed for the {split} split. Re-download or re-extract cifar-10-python.tar.gz.")


def _load_official(batches: dict[str, dict], split: str, image_size: int | None,
                   source: str) -> ImageSet:
    classes = list(CIFAR10_CLASSES)
    if _OFFICIAL_META in batches:
        names = batches[_OFFICIAL_META].get("label_names")
        if not isinstance(names, list | tuple) or not names:
            raise DataError(f"{_OFFICIAL_META} in {source} has no 'label_names' list. Delete it "
                            f"to use the standard CIFAR-10 class names.")
        try:
            classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
        except UnicodeDecodeError as err:
            raise DataError(f"{_OFFICIAL_META} in {source} holds a class name that is not "
                            f"UTF-8 text ({err.object!r}: {err.reason} at byte {err.start}). "
                            f"Rewrite its label_names as UTF-8, or delete {_OFFICIAL_META} to "
                            f"use the standard CIFAR-10 class names.") from None

    images, labels = [], []
    for name in _OFFICIAL_BATCHES[split]:
        batch = batches[name]
        data = batch.get("data")
        try:
            batch_labels = np.asarray(batch.get("labels"), dtype=np.int64)
        except (TypeError, ValueError):
            batch_labels = None
        if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
                or data.shape[1] != 3 * 32 * 32 or batch_labels is None
                or batch_labels.shape != data.shape[:1]):
            shape = getattr(data, "shape", None)
            raise DataError(
                f"{name} in {source} is not a CIFAR-10 batch: expected 'data' uint8 "
                f"(n, 3072) and n integer 'labels', got data {type(data).__name__} {shape}. "
                f"Re-download cifar-10-python.tar.gz.")
        # Each row is the red, then green, then blue 32x32 plane, row-major.
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(batch_labels))
    label_tensor = torch.cat(labels)
    if not _labels_in_range(label_tensor, len(classes)):
        raise DataError(f"{source} has labels outside 0..{len(classes) - 1} for classes "
                        f"{classes}. Re-download cifar-10-python.tar.gz.")
    return ImageSet(_resize_tensor(torch.cat(images), image_size), label_tensor, classes, source)


def _labels_in_range(labels: torch.Tensor, num_classes: int) -> bool:
    return labels.numel() == 0 or (int(labels.min()) >= 0 and int(labels.max()) < num_classes)


def _resize_tensor(images: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """Bilinear resize of a uint8 (N, 3, H, W) tensor to image_size x image_size."""
    if image_size is None or images.shape[-2:] == (image_size, image_size):
        return images
    chunks = []
    for chunk in images.split(4096):  # bounds the float copy to a few hundred MB
        resized = F.interpolate(chunk.float(), size=(image_size, image_size), mode="bilinear",
                                align_corners=False, antialias=True)
        chunks.append(resized.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks)


# --------------------------------------------------------------------------------------------
# Walking folders and reading files, safely
#
# Data folders come from users and from other people's archives and scripts, so the walk must
# end and every read must be bounded, whatever links, pipes or huge files a folder holds.


def _file_kind(mode: int) -> str:
    """What a non-regular file is, in words, for error messages."""
    for test, kind in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return kind
    return "not a regular file"


def _read_file(path: str | os.PathLike, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Opened without blocking and checked with fstat before any read: reading a FIFO would wait
    forever for a writer, and a device or a huge file would never end or fill memory. The check
    is on the opened descriptor, so the file cannot be swapped between check and read.

    Raises:
        _BadImage: the file is not a regular file, is larger than ``limit``, or cannot be read;
            the message says which.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise _BadImage(f"cannot read: {err}") from err
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _BadImage(f"{_file_kind(info.st_mode)}, not a regular file; only regular "
                            f"files are read")
        if info.st_size > limit:
            raise _BadImage(_too_large(info.st_size, limit))
        try:
            data = stream.read(limit + 1)
        except OSError as err:
            raise _BadImage(f"cannot read: {err}") from err
    if len(data) > limit:  # grew while being read
        raise _BadImage(_too_large(len(data), limit))
    return data


def _too_large(size: int, limit: int) -> str:
    return (f"{size} bytes, over the cap of {limit // 2**20} MiB per file "
            f"(resnets.data.sources.MAX_FILE_BYTES)")


@dataclass
class _Tree:
    """The visible entries below a folder, as relative POSIX names (see `_walk_tree`)."""

    files: dict[str, os.stat_result | None]  # every non-folder; stat None: not asked for, or
    #                                          a dangling link
    dirs: set[str]  # folders walked into, links included
    skipped: list[tuple[str, str]]  # (name, why) of folder links not followed


def _walk_tree(root: Path, class_depth: int | None = None, stat_files: bool = True) -> _Tree:
    """Every visible file and folder below ``root``; names starting with "." are left out.

    ``stat_files=False`` skips a stat call per file (ImageNet has 1.3M) when only the names
    are needed.

    Folder links are followed (a class folder that links to another disk is common, and
    torchvision's ImageFolder follows them too), under two rules that make the walk end and
    keep labels honest:

    1. Each folder is read at most once, known by (st_dev, st_ino), not by its path: a link to
       a folder already read (``cat/a -> .``, or a second link to one folder) is skipped. A
       loop cannot hang the walk, and no image is counted twice.
    2. With ``class_depth`` (the depth of the class folders, 1 for ``ROOT/<class>``), a
       folder link inside a class folder must stay inside that class folder; one that leaves
       it (``cat/up -> ..``, ``cat/x -> ../dog``) would give other images this class's label,
       so it is skipped.

    Skipped links are listed in ``skipped`` for the caller to warn about. The walk is in
    sorted order, so which of two links to one folder is skipped does not depend on the file
    system.

    Raises:
        DataError: a folder cannot be listed (e.g. no read permission); the message names it.
    """
    top = os.stat(root)
    seen = {(top.st_dev, top.st_ino)}
    tree = _Tree({}, set(), [])
    stack: list[tuple[str, str | None]] = [("", None)]  # (relative folder, real class folder)
    while stack:
        folder, class_real = stack.pop()
        depth = folder.count("/") + 1 if folder else 0
        try:
            with os.scandir(root / folder) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")),
                                 key=lambda e: e.name)
        except OSError as err:
            raise DataError(f"Cannot list the folder {root / folder}: {err}. Give the user "
                            f"running resnets read access to it, or move it out of the "
                            f"data folder.") from err
        below: list[tuple[str, str | None]] = []
        for entry in entries:
            name = _join(folder, entry.name)
            try:
                # From the directory listing (no stat call) except for links, which it follows.
                is_dir = entry.is_dir()
                info = entry.stat() if is_dir or stat_files else None  # follows links
            except OSError:  # a dangling link: reading it reports it, if it is an image
                is_dir, info = False, None
            if not is_dir or info is None:
                tree.files[name] = info
                continue
            if class_real is not None and entry.is_symlink():
                target = os.path.realpath(entry.path)
                if os.path.commonpath([target, class_real]) != class_real:
                    tree.skipped.append((name, f"leads out of its class folder to {target}"))
                    continue
            if (info.st_dev, info.st_ino) in seen:
                tree.skipped.append((name, "leads to a folder already read (a loop, or a "
                                           "second link to one folder)"))
                continue
            seen.add((info.st_dev, info.st_ino))
            tree.dirs.add(name)
            is_class = class_depth is not None and depth + 1 == class_depth
            below.append((name, os.path.realpath(entry.path) if is_class else class_real))
        stack += reversed(below)  # popped in sorted order
    return tree


def _warn_skipped_links(root: Path, tree: _Tree) -> None:
    if tree.skipped:
        listed = "; ".join(f"{root / name} {why}" for name, why in tree.skipped[:3])
        more = f" (and {len(tree.skipped) - 3} more)" if len(tree.skipped) > 3 else ""
        warnings.warn(f"Skipped {len(tree.skipped)} folder link(s) in {root}: {listed}{more}. "
                      f"Remove the link(s), or replace them by the folders themselves.",
                      stacklevel=3)


def list_files(root: str | os.PathLike) -> list[Path]:
    """Every visible file below the folder ``root``, sorted, with folder links followed safely
    (see `_walk_tree`: loops and second links to a folder are skipped, with a warning).

    Files that are not regular (pipes, devices) and dangling links are listed too: reading
    them through the data layer gives a clear error instead of blocking."""
    base = Path(root)
    tree = _walk_tree(base)
    _warn_skipped_links(base, tree)
    return [base / name for name in sorted(tree.files, key=_walk_order)]


def _walk_order(name: str) -> tuple[str, str]:
    # os.walk's order, as torchvision's ImageFolder sorts it: folder by folder, then by name.
    return posixpath.dirname(name), posixpath.basename(name)


# --------------------------------------------------------------------------------------------
# 3. Image folders (on disk or inside an archive)
#
# Both kinds are first reduced to relative POSIX names (image files and folders); one set of
# layout rules then picks the split, the classes and the file order, so a tree gives the same
# ImageSet whether it is a folder or an archive of that folder.


@dataclass
class _FolderPlan:
    classes: list[str]  # sorted class folder names
    files: list[str]  # relative names, class by class, sorted within a class
    labels: list[int]  # class index of each file


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _subfolders(folders: set[str], prefix: str) -> list[str]:
    """Sorted names of the folders directly inside `prefix` ("" is the root)."""
    start = _join(prefix, "")
    return sorted({f[len(start):] for f in folders
                   if f.startswith(start) and f != prefix and "/" not in f[len(start):]})


def _plan_image_folder(files: list[str], dirs: set[str], split: str, unwrap: bool,
                       describe: Callable[[str], str]) -> _FolderPlan:
    """Apply the image-folder layout rules to a tree given as relative POSIX names.

    files: image files (hidden ones already left out); dirs: folders, including empty ones.
    unwrap: step into lone wrapper folders (archive.tar -> cifar10/ -> train/...), which
    archives often have.
    """
    folders = set(dirs)
    for name in files:
        parts = name.split("/")
        folders.update("/".join(parts[:k]) for k in range(1, len(parts)))
    has_files_in = {posixpath.dirname(name) for name in files}

    root = ""
    while unwrap:
        subs = _subfolders(folders, root)
        if (len(subs) == 1 and subs[0] not in SPLITS and root not in has_files_in
                and _join(root, subs[0]) not in has_files_in):
            root = _join(root, subs[0])
        else:
            break

    if _join(root, split) in folders:
        root = _join(root, split)
    else:
        others = [s for s in SPLITS if _join(root, s) in folders]
        if others:
            raise DataError(
                f"{describe(root)} has a {others[0]}/ folder but no {split}/ folder, so it has "
                f"no {split} split. Add {split}/<class>/<image>, or hold out a validation "
                f"split of the {others[0]} images instead.")

    classes = _subfolders(folders, root)
    if not classes:
        raise DataError(f"{describe(root)} has no class folders. Expected <class>/<image> "
                        f"below it.\n" + ACCEPTED_LAYOUTS)
    grouped: dict[str, list[str]] = {name: [] for name in classes}
    start = _join(root, "")
    for name in files:
        if name.startswith(start):
            cls, sep, _ = name[len(start):].partition("/")
            if sep and cls in grouped:
                grouped[cls].append(name)
    plan = _FolderPlan(classes, [], [])
    for label, cls in enumerate(classes):
        if not grouped[cls]:
            raise DataError(f"Class folder {describe(_join(root, cls))} contains no images "
                            f"({' '.join(IMAGE_EXTENSIONS)}). Add images or remove the folder.")
        plan.files += sorted(grouped[cls])
        plan.labels += [label] * len(grouped[cls])
    return plan


class _BadImage(Exception):
    """A file that is not a decodable image; the message says why."""


def _to_rgb8(img: Image.Image) -> Image.Image:
    """8-bit RGB view of any PIL image mode."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (PNG, TIFF): scale 0..65535 to 0..255 (x * 255 / 65535, rounded) instead
        # of clipping, which would turn most of the range white.
        wide = np.asarray(img).astype(np.int64).clip(0, 65535)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        # Composite onto black: what is transparent carries no colour, like the crop padding.
        rgba = np.asarray(img.convert("RGBA")).astype(np.uint16)
        rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    if img.mode == "F":  # PIL has no float -> RGB conversion; via L it clips to 0..255
        img = img.convert("L")
    return img.convert("RGB")


def _decode_image_bytes(data: bytes, image_size: int | None) -> np.ndarray:
    """Decode one encoded image into a (3, H, W) uint8 array, or raise _BadImage."""
    if not data:
        raise _BadImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as img:
            img.load()
            rgb = img if img.mode == "RGB" else _to_rgb8(img)
    except Exception as err:  # PIL plugins raise many exception types on corrupt input
        raise _BadImage(f"{type(err).__name__}: {err}") from err
    if image_size is not None and rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(rgb).transpose(2, 0, 1)


def _assemble(plan: _FolderPlan, decode: Callable[[str], np.ndarray], *, skip_bad_images: bool,
              describe: Callable[[str], str], source: str, progress: bool) -> ImageSet:
    """Stack the images of `plan` (decoded by `decode`) into an ImageSet, handling bad files."""
    images: np.ndarray | None = None  # (N, 3, H, W), allocated once the first image is known
    keep = np.ones(len(plan.files), dtype=bool)
    bad: list[tuple[str, str]] = []
    names = tqdm(plan.files, desc="decoding images", unit="img", disable=None if progress
                 else True)
    for i, name in enumerate(names):
        try:
            chw = decode(name)
        except _BadImage as err:
            keep[i] = False
            bad.append((describe(name), str(err)))
            continue
        if images is None:
            images = np.empty((len(plan.files), *chw.shape), dtype=np.uint8)
        elif chw.shape != images.shape[1:]:
            raise DataError(
                f"{describe(name)} is {chw.shape[2]}x{chw.shape[1]} pixels but earlier images "
                f"are {images.shape[3]}x{images.shape[2]}. Set image_size to resize every "
                f"image to one size.")
        images[i] = chw

    if bad and not skip_bad_images:
        listed = "\n".join(f"  {name}: {why}" for name, why in bad[:5])
        more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(f"{len(bad)} file(s) in {source} are not readable images:\n{listed}{more}"
                        f"\nDelete or replace them, or (`resnets train` only) pass "
                        f"--skip-bad-images to leave them out.")
    if images is None:
        raise DataError(f"None of the {len(plan.files)} image files in {source} could be "
                        f"decoded. Check that --data points at the right data.")
    labels = torch.tensor(plan.labels, dtype=torch.int64)
    if bad:
        images, labels = images[keep], labels[torch.from_numpy(keep)]
    return ImageSet(torch.from_numpy(images), labels, plan.classes, source,
                    [name for name, _ in bad])


def _decode_image_folder(root: Path, tree: _Tree, split: str, image_size: int | None,
                         skip_bad_images: bool) -> ImageSet:
    """Decode the `split` of an image-folder tree on disk (``tree``: its `_walk_tree`).

    Decoding is serial: for 32x32 files the cost is Python overhead per file, which holds the
    GIL, so a thread pool was measured slower than one thread (50k files: 4.4 s -> 5.9 s).
    """
    files = [name for name in tree.files if _is_image_name(name)]

    def describe(name: str) -> str:
        return str(root / name)

    def decode(name: str) -> np.ndarray:
        return _decode_image_bytes(_read_file(root / name), image_size)

    plan = _plan_image_folder(files, tree.dirs, split, unwrap=False, describe=describe)
    return _assemble(plan, decode, skip_bad_images=skip_bad_images, describe=describe,
                     source=f"image folder {root} ({split} split)", progress=True)


# --------------------------------------------------------------------------------------------
# 4. Archives


def _archive_layout(archive: Path) -> str:
    """"official" or "image_folder", judged from the first file that tells them apart."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = posixpath.basename(member.name.rstrip("/"))
                if member.isfile() and name in _OFFICIAL_NAMES:
                    return "official"
                if member.isfile() and _is_image_name(name):
                    return "image_folder"
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"Cannot read the archive {archive}: {err}. Re-download or re-create "
                        f"it.") from err
    raise DataError(f"The archive {archive} holds neither CIFAR-10 batch files nor images.\n"
                    + ACCEPTED_LAYOUTS)


def _member_name(archive: Path, member: tarfile.TarInfo) -> str:
    """The member's relative POSIX name; refuses absolute names and '..' outright."""
    raw = member.name.replace("\\", "/")
    if raw.startswith("/") or ".." in raw.split("/") or ":" in raw.split("/")[0]:
        raise DataError(f"The archive {archive} has an unsafe member {member.name!r} (absolute "
                        f"path or '..'): it was built to write outside any folder it is "
                        f"unpacked into. Refusing to read it; re-create the archive with "
                        f"relative paths.")
    return posixpath.normpath(raw).lstrip("/")


def _decode_image_archive(archive: Path, split: str, image_size: int | None,
                          skip_bad_images: bool) -> ImageSet:
    """Decode the `split` of an image-folder tree packed in a tar archive.

    Members are decoded from memory in one streaming pass, with no extraction: writing and
    re-reading 50k small files cost far more than decoding them (Python's tarfile took 10-40 s
    to extract the CIFAR archive here, streaming takes about 5 s), and nothing is ever written
    from the archive, so no member can escape a folder. Every image is decoded, also those of
    the other split, since the layout is known only once all names have been seen.
    """
    decoded: dict[str, np.ndarray | _BadImage] = {}
    dirs: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tqdm(tar, desc=f"decoding {archive.name}", unit="file", disable=None):
                name = _member_name(archive, member)
                if name == "." or any(part.startswith(".") for part in name.split("/")):
                    continue
                if member.isdir():
                    dirs.add(name)
                elif member.isfile() and _is_image_name(name):
                    if member.size > MAX_FILE_BYTES:
                        # Judged from the header, before a byte of the member is read.
                        decoded[name] = _BadImage(_too_large(member.size, MAX_FILE_BYTES))
                        continue
                    stream = tar.extractfile(member)
                    assert stream is not None  # regular files always have one
                    try:
                        decoded[name] = _decode_image_bytes(stream.read(), image_size)
                    except _BadImage as err:
                        decoded[name] = err
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"Cannot read the archive {archive}: {type(err).__name__}: {err}. "
                        f"Re-download or re-create it.") from err

    def describe(name: str) -> str:
        return f"{archive}:{name}" if name else str(archive)

    def decode(name: str) -> np.ndarray:
        result = decoded[name]
        if isinstance(result, _BadImage):
            raise result
        return result

    plan = _plan_image_folder(list(decoded), dirs, split, unwrap=True, describe=describe)
    return _assemble(plan, decode, skip_bad_images=skip_bad_images, describe=describe,
                     source=f"image-folder archive {archive} ({split} split)", progress=False)


# --------------------------------------------------------------------------------------------
# 5. Decode-once cache


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _tree_fingerprint(tree: _Tree) -> dict:
    """A hash of every file's relative path, size, mtime and ctime, and of the folders.

    The path carries the label, so an image moved to another class folder changes the key
    even when ``cp -a`` / ``rsync -a`` keep its size and mtime (totals and the newest mtime
    would not change). The ctime, which no copy tool can set, catches a file replaced by
    another of the same size and mtime.
    """
    digest = hashlib.sha256()
    for name in sorted(tree.files):
        info = tree.files[name]
        fields = [name] if info is None else [name, info.st_size, info.st_mtime_ns,
                                              info.st_ctime_ns]
        digest.update(json.dumps(fields).encode() + b"\n")
    digest.update(json.dumps(sorted(tree.dirs)).encode())
    return {"tree_sha256": digest.hexdigest()}


def _cache_key(path: Path, tree: _Tree | None, split: str, image_size: int | None,
               skip_bad_images: bool) -> str:
    if tree is not None:
        identity = _tree_fingerprint(tree)
    else:
        stat = path.stat()
        identity = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return _digest({"format": _CACHE_FORMAT, "path": str(path), **identity, "split": split,
                    "image_size": image_size, "skip_bad_images": skip_bad_images})


def _read_cache(file: Path) -> ImageSet | None:
    """The ImageSet saved in `file`, or None when there is none or it is unusable."""
    if not file.is_file():
        return None
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = json.loads(f.metadata()[_CACHE_METADATA_KEY])
            # Copy out of the memory map so the set never depends on the file afterwards.
            images, labels = f.get_tensor("images").clone(), f.get_tensor("labels").clone()
        image_set = ImageSet(images, labels, list(meta["classes"]), str(meta["source"]),
                             list(meta["skipped"]))
        if not _labels_in_range(labels, len(image_set.classes)):
            raise ValueError("labels out of range")
        return image_set
    except Exception as err:  # any damage means: decode again
        warnings.warn(f"Ignoring the unreadable decoded-data cache {file} ({type(err).__name__}: "
                      f"{err}); decoding the source again.", stacklevel=3)
        return None


def _write_cache(file: Path, image_set: ImageSet) -> None:
    """Save atomically (temp file, fsync, rename) so a crash never leaves a torn cache."""
    meta = {"classes": image_set.classes, "source": image_set.source,
            "skipped": image_set.skipped, "format": _CACHE_FORMAT}
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        save_file({"images": image_set.images.contiguous(), "labels": image_set.labels}, str(tmp),
                  metadata={_CACHE_METADATA_KEY: json.dumps(meta)})
        with open(tmp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, file)
    except OSError as err:
        # The cache only saves time; failing to write it must not fail the run.
        warnings.warn(f"Could not save decoded images to {file} ({err}); the next run will "
                      f"decode again. Set RESNETS_CACHE to a writable folder.", stacklevel=3)
        tmp.unlink(missing_ok=True)
