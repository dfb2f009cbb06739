"""The official CIFAR-10 python release, read safely, and the torchvision download.

The release (``cifar-10-python.tar.gz``) holds pickled dicts of numpy arrays. Unpickling runs
whatever the file names, so it is read with `_ArrayOnlyUnpickler`, which rebuilds numpy arrays
and nothing else; the batches are then checked for the shapes CIFAR-10 has.
"""

from __future__ import annotations

import importlib
import io
import pickle
import posixpath
import tarfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .files import MAX_FILE_BYTES, UnreadableFile, read_file, too_large
from .imageset import ACCEPTED_LAYOUTS, ImageSet, labels_in_range

__all__ = [
    "CIFAR10_CLASSES",
    "RELEASE_FILE_NAMES",
    "find_release_dir",
    "load_release_dir",
    "load_release_tar",
    "load_torchvision",
]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

_RELEASE_DIRNAME = "cifar-10-batches-py"
_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_META = "batches.meta"
# Every file name of the release; one of them in an archive marks the archive as the release.
RELEASE_FILE_NAMES = frozenset(_BATCHES["train"] + _BATCHES["test"] + (_META,))


def load_torchvision(cache: Path, split: str, download: bool,
                     image_size: int | None) -> ImageSet:
    """CIFAR-10 through torchvision, downloaded into ``<cache>/torchvision`` if allowed.

    Raises:
        DataError: the download failed or (``download=False``) the cache lacks it; the
            message says how to bring the release by hand.
    """
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
    return ImageSet(_resize(images, image_size),
                    torch.tensor(dataset.targets, dtype=torch.int64), list(dataset.classes),
                    f"torchvision CIFAR10 in {root} ({split} split)")


# --------------------------------------------------------------------------------------------
# The official release


def find_release_dir(path: Path) -> Path | None:
    """The folder holding the release's batch files, if `path` is or contains one."""
    for candidate in (path, path / _RELEASE_DIRNAME):
        if candidate.is_dir() and any((candidate / name).is_file() for name in RELEASE_FILE_NAMES
                                      if name != _META):
            return candidate
    return None


def load_release_dir(folder: Path, split: str, image_size: int | None) -> ImageSet:
    """The ``split`` of the release extracted in ``folder`` (see `find_release_dir`)."""
    return _load_batches(_read_dir(folder, split), split, image_size,
                         f"CIFAR-10 python release {folder} ({split} split)")


def load_release_tar(archive: Path, split: str, image_size: int | None) -> ImageSet:
    """The ``split`` of the release read from a tar archive (``cifar-10-python.tar.gz``)."""
    return _load_batches(_read_tar(archive, split), split, image_size,
                         f"CIFAR-10 python release {archive} ({split} split)")


def _read_dir(folder: Path, split: str) -> dict[str, dict]:
    """The unpickled batches of ``split`` (and batches.meta, if present) in ``folder``."""
    batches = {}
    for name in _BATCHES[split] + (_META,):
        file = folder / name
        if file.is_file():
            try:
                data = read_file(file)
            except UnreadableFile as err:
                raise DataError(f"Cannot read {file}: {err}. Re-extract "
                                f"cifar-10-python.tar.gz.") from err
            batches[name] = _unpickle(io.BytesIO(data), str(file))
    _require_batches(batches, split, str(folder))
    return batches


def _read_tar(archive: Path, split: str) -> dict[str, dict]:
    """As `_read_dir`, from the members of a tar archive, wherever they sit in it."""
    batches = {}
    wanted = _BATCHES[split] + (_META,)
    # Iterating in archive order reads a .tar.gz in one pass; random access would re-inflate.
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            name = posixpath.basename(member.name.rstrip("/"))
            if member.isfile() and name in wanted and name not in batches:
                if member.size > MAX_FILE_BYTES:
                    raise DataError(f"The archive member {archive}:{member.name} is "
                                    f"{too_large(member.size, MAX_FILE_BYTES)}; a CIFAR-10 "
                                    f"batch is 31 MB. Re-download cifar-10-python.tar.gz.")
                stream = tar.extractfile(member)
                assert stream is not None  # regular files always have a stream
                batches[name] = _unpickle(io.BytesIO(stream.read()), f"{archive}:{member.name}")
    _require_batches(batches, split, str(archive))
    return batches


def _require_batches(batches: dict[str, dict], split: str, shown: str) -> None:
    missing = [name for name in _BATCHES[split] if name not in batches]
    if missing:
        raise DataError(
            f"{shown} looks like the CIFAR-10 python release but lacks {', '.join(missing)} "
            f"needed for the {split} split. Re-download or re-extract cifar-10-python.tar.gz.")


def _load_batches(batches: dict[str, dict], split: str, image_size: int | None,
                  source: str) -> ImageSet:
    """Check the batches of ``split`` and stack them into an ImageSet."""
    classes = list(CIFAR10_CLASSES)
    if _META in batches:
        names = batches[_META].get("label_names")
        if not isinstance(names, list | tuple) or not names:
            raise DataError(f"{_META} in {source} has no 'label_names' list. Delete it to use "
                            f"the standard CIFAR-10 class names.")
        try:
            classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
        except UnicodeDecodeError as err:
            raise DataError(f"{_META} in {source} holds a class name that is not UTF-8 text "
                            f"({err.object!r}: {err.reason} at byte {err.start}). Rewrite its "
                            f"label_names as UTF-8, or delete {_META} to use the standard "
                            f"CIFAR-10 class names.") from None

    images, labels = [], []
    for name in _BATCHES[split]:
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
    if not labels_in_range(label_tensor, len(classes)):
        raise DataError(f"{source} has labels outside 0..{len(classes) - 1} for classes "
                        f"{classes}. Re-download cifar-10-python.tar.gz.")
    return ImageSet(_resize(torch.cat(images), image_size), label_tensor, classes, source)


def _resize(images: torch.Tensor, image_size: int | None) -> torch.Tensor:
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
# Its pickles, loaded without running code


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
