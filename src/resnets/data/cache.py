"""The decode-once cache: a decoded `ImageSet` saved as ``<cache>/decoded/<key>.safetensors``.

The key hashes the source's path and identity (for a folder every file's name, size, mtime and
ctime; for a file its size and mtime) with the decoding options, so a changed source or option
decodes again. A damaged cache file is ignored with a warning; a cache that cannot be written
only costs time.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from .files import FileTree
from .fingerprint import image_digest
from .imageset import ImageSet, labels_in_range

__all__ = ["cache_key", "default_cache_dir", "read_cache", "write_cache"]

# Bump when decoding changes so that caches written by older code are not reused.
_CACHE_FORMAT = 1
_CACHE_METADATA_KEY = "resnets.imageset"


def default_cache_dir() -> Path:
    """Where downloads and decoded tensors go: $RESNETS_CACHE, else ~/.cache/resnets."""
    env = os.environ.get("RESNETS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "resnets"


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _tree_fingerprint(tree: FileTree) -> dict:
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


def cache_key(path: Path, tree: FileTree | None, split: str, image_size: int | None,
              skip_bad_images: bool) -> str:
    """The cache file name for decoding ``split`` of ``path`` with these options; ``tree`` is
    the `walk_tree` of a folder ``path``, None for a file."""
    if tree is not None:
        identity = _tree_fingerprint(tree)
    else:
        stat = path.stat()
        identity = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return _digest({"format": _CACHE_FORMAT, "path": str(path), **identity, "split": split,
                    "image_size": image_size, "skip_bad_images": skip_bad_images})


def read_cache(file: Path) -> ImageSet | None:
    """The ImageSet saved in `file`, or None when there is none or it is unusable."""
    if not file.is_file():
        return None
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = json.loads(f.metadata()[_CACHE_METADATA_KEY])
            # Copy out of the memory map so the set never depends on the file afterwards.
            images, labels = f.get_tensor("images").clone(), f.get_tensor("labels").clone()
        image_set = ImageSet(images, labels, list(meta["classes"]), str(meta["source"]),
                             list(meta["skipped"]), digest=meta.get("sha256"))
        if not labels_in_range(labels, len(image_set.classes)):
            raise ValueError("labels out of range")
        return image_set
    except Exception as err:  # any damage means: decode again
        warnings.warn(f"Ignoring the unreadable decoded-data cache {file} ({type(err).__name__}: "
                      f"{err}); decoding the source again.", stacklevel=3)
        return None


def write_cache(file: Path, image_set: ImageSet) -> None:
    """Save atomically (temp file, fsync, rename) so a crash never leaves a torn cache.

    The images' digest (`image_digest`) is computed here, once per decoding, and saved with
    them: every later load of the cache has the data's fingerprint for free."""
    meta = {"classes": image_set.classes, "source": image_set.source,
            "skipped": image_set.skipped, "format": _CACHE_FORMAT,
            "sha256": image_digest(image_set)}
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
