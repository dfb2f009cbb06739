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

The parts live in modules of their own: `cifar_release` (the official release and the
torchvision download), `image_folder` (image folders and archives of them) and `cache` (the
decoded-tensor cache), over `files` (safe walking and reading) and `decode` (image bytes to
8-bit RGB). This module picks the part for a path and runs the cache around it.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import warnings
from pathlib import Path

from ..errors import DataError
from .cache import cache_key, default_cache_dir, read_cache, write_cache
from .cifar_release import (
    RELEASE_FILE_NAMES,
    find_release_dir,
    load_release_dir,
    load_release_tar,
    load_torchvision,
)
from .decode import is_image_name
from .files import FileTree, file_kind, walk_tree, warn_skipped_links
from .image_folder import load_image_archive, load_image_folder
from .imageset import ACCEPTED_LAYOUTS, SPLITS, ImageSet

__all__ = ["load_image_set"]


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
        image_set = load_torchvision(cache, split, download, image_size)
        image_set.origin = {"kind": "CIFAR-10 downloaded by torchvision",
                            "name": "cifar-10-python.tar.gz", "bytes": None, "files": None}
        return image_set
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
        raise DataError(f"Dataset path {path} is {file_kind(path.stat().st_mode)}, not a "
                        f"folder or a regular file. Check the --data path.\n"
                        + ACCEPTED_LAYOUTS)

    tree = None
    if path.is_dir():
        # One walk serves both the cache key and the decoding, so both see the same files.
        tree = walk_tree(path, class_depth=2 if any((path / s).is_dir() for s in SPLITS)
                          else 1)
        warn_skipped_links(path, tree)
    key = cache_key(path, tree, split, image_size, skip_bad_images)
    cache_file = cache / "decoded" / f"{key}.safetensors"
    image_set = read_cache(cache_file)
    if image_set is None:
        image_set = _decode_source(path, tree, split, skip_bad_images, image_size)
        write_cache(cache_file, image_set)
    image_set.origin = _origin(path, tree)
    # Name the data as the user did (a relative path stays relative in logs and reports).
    image_set.source = image_set.source.replace(str(path), str(source))
    if image_set.skipped:
        # Repeated on cache hits too: every run should say that its data has holes.
        warnings.warn(f"Skipped {len(image_set.skipped)} unreadable image(s) in "
                      f"{image_set.source}, e.g. {', '.join(image_set.skipped[:3])}",
                      stacklevel=2)
    return image_set


def _decode_source(path: Path, tree: FileTree | None, split: str, skip_bad_images: bool,
                   image_size: int | None) -> ImageSet:
    """Decode a path source (layouts 2-4) without looking at the decoded cache; ``tree`` is
    the `walk_tree` of a folder ``path``."""
    if tree is not None:
        release = find_release_dir(path)
        if release is not None:
            return load_release_dir(release, split, image_size)
        return load_image_folder(path, tree, split, image_size, skip_bad_images)
    if not tarfile.is_tarfile(path):
        raise DataError(f"{path} is a file but not a tar archive. Point --data at a folder or a "
                        f".tar/.tar.gz/.tar.xz archive (unpack .zip files first).\n"
                        + ACCEPTED_LAYOUTS)
    if _archive_layout(path) == "official":
        return load_release_tar(path, split, image_size)
    return load_image_archive(path, split, image_size, skip_bad_images)


def _origin(path: Path, tree: FileTree | None) -> dict:
    """What a fingerprint says about the source beside its digest: kind, name and size."""
    if tree is not None:
        kind = ("CIFAR-10 python release folder" if find_release_dir(path) is not None
                else "image folder")
        sizes = [info.st_size for info in tree.files.values() if info is not None]
        return {"kind": kind, "name": path.name, "bytes": sum(sizes), "files": len(tree.files)}
    kind = ("CIFAR-10 python release archive" if _archive_layout(path) == "official"
            else "image-folder archive")
    return {"kind": kind, "name": path.name, "bytes": path.stat().st_size, "files": None}


def _archive_layout(archive: Path) -> str:
    """"official" or "image_folder", judged from the first file that tells them apart."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = posixpath.basename(member.name.rstrip("/"))
                if member.isfile() and name in RELEASE_FILE_NAMES:
                    return "official"
                if member.isfile() and is_image_name(name):
                    return "image_folder"
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"Cannot read the archive {archive}: {err}. Re-download or re-create "
                        f"it.") from err
    raise DataError(f"The archive {archive} holds neither CIFAR-10 batch files nor images.\n"
                    + ACCEPTED_LAYOUTS)
