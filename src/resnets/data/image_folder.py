"""An image folder, on disk or packed in a tar archive, decoded whole into an `ImageSet`.

This is the in-memory path for small images (CIFAR-size sets decoded once and cached by
`resnets.data.sources`); `resnets.data.folder` reads ImageNet-size folders lazily instead.

Both kinds are first reduced to relative POSIX names (image files and folders); one set of
layout rules (`plan_image_folder`) then picks the split, the classes and the file order, so a
tree gives the same ImageSet whether it is a folder or an archive of that folder.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import DataError
from .decode import IMAGE_EXTENSIONS, BadImage, decode_image_bytes, is_image_name
from .files import MAX_FILE_BYTES, FileTree, UnreadableFile, read_file, too_large
from .imageset import ACCEPTED_LAYOUTS, SPLITS, ImageSet

__all__ = ["FolderPlan", "load_image_archive", "load_image_folder", "plan_image_folder"]


@dataclass
class FolderPlan:
    """Which files of a tree make the split, in order, and their labels."""

    classes: list[str]  # sorted class folder names
    files: list[str]  # relative names, class by class, sorted within a class
    labels: list[int]  # class index of each file


def _subfolders(folders: set[str], prefix: str) -> list[str]:
    """Sorted names of the folders directly inside `prefix` ("" is the root)."""
    start = posixpath.join(prefix, "")
    return sorted({f[len(start):] for f in folders
                   if f.startswith(start) and f != prefix and "/" not in f[len(start):]})


def plan_image_folder(files: list[str], dirs: set[str], split: str, unwrap: bool,
                       describe: Callable[[str], str]) -> FolderPlan:
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
                and posixpath.join(root, subs[0]) not in has_files_in):
            root = posixpath.join(root, subs[0])
        else:
            break

    if posixpath.join(root, split) in folders:
        root = posixpath.join(root, split)
    else:
        others = [s for s in SPLITS if posixpath.join(root, s) in folders]
        if split == "test" and not others:
            # A flat <class>/<image> tree is training data: serving it as the test split
            # would report training images as test error.
            raise DataError(
                f"{describe(root)} has no test/ folder, so it has no test split (a flat "
                f"<class>/<image> tree is the training split). Add test/<class>/<image>, or "
                f"evaluate on the held-out validation split (--split val).")
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
    start = posixpath.join(root, "")
    for name in files:
        if name.startswith(start):
            cls, sep, _ = name[len(start):].partition("/")
            if sep and cls in grouped:
                grouped[cls].append(name)
    plan = FolderPlan(classes, [], [])
    for label, cls in enumerate(classes):
        if not grouped[cls]:
            folder = describe(posixpath.join(root, cls))
            raise DataError(f"Class folder {folder} contains no images "
                            f"({' '.join(IMAGE_EXTENSIONS)}). Add images or remove the folder.")
        plan.files += sorted(grouped[cls])
        plan.labels += [label] * len(grouped[cls])
    return plan


# --------------------------------------------------------------------------------------------
# Decoding a plan, from a folder or from an archive


def _assemble(plan: FolderPlan, decode: Callable[[str], np.ndarray], *, skip_bad_images: bool,
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
        except UnreadableFile as err:  # unreadable, or BadImage
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


def load_image_folder(root: Path, tree: FileTree, split: str, image_size: int | None,
                      skip_bad_images: bool) -> ImageSet:
    """Decode the `split` of an image-folder tree on disk (``tree``: its `walk_tree`).

    Decoding is serial: for 32x32 files the cost is Python overhead per file, which holds the
    GIL, so a thread pool was measured slower than one thread (50k files: 4.4 s -> 5.9 s).
    """
    files = [name for name in tree.files if is_image_name(name)]

    def describe(name: str) -> str:
        return str(root / name)

    def decode(name: str) -> np.ndarray:
        return decode_image_bytes(read_file(root / name), image_size)

    plan = plan_image_folder(files, tree.dirs, split, unwrap=False, describe=describe)
    return _assemble(plan, decode, skip_bad_images=skip_bad_images, describe=describe,
                     source=f"image folder {root} ({split} split)", progress=True)


def _member_name(archive: Path, member: tarfile.TarInfo) -> str:
    """The member's relative POSIX name; refuses absolute names and '..' outright."""
    raw = member.name.replace("\\", "/")
    if raw.startswith("/") or ".." in raw.split("/") or ":" in raw.split("/")[0]:
        raise DataError(f"The archive {archive} has an unsafe member {member.name!r} (absolute "
                        f"path or '..'): it was built to write outside any folder it is "
                        f"unpacked into. Refusing to read it; re-create the archive with "
                        f"relative paths.")
    return posixpath.normpath(raw).lstrip("/")


def load_image_archive(archive: Path, split: str, image_size: int | None,
                       skip_bad_images: bool) -> ImageSet:
    """Decode the `split` of an image-folder tree packed in a tar archive.

    Members are decoded from memory in one streaming pass, with no extraction: writing and
    re-reading 50k small files cost far more than decoding them (Python's tarfile took 10-40 s
    to extract the CIFAR archive here, streaming takes about 5 s), and nothing is ever written
    from the archive, so no member can escape a folder. Every image is decoded, also those of
    the other split, since the layout is known only once all names have been seen.
    """
    decoded: dict[str, np.ndarray | UnreadableFile] = {}
    dirs: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tqdm(tar, desc=f"decoding {archive.name}", unit="file", disable=None):
                name = _member_name(archive, member)
                if name == "." or any(part.startswith(".") for part in name.split("/")):
                    continue
                if member.isdir():
                    dirs.add(name)
                elif member.isfile() and is_image_name(name):
                    if member.size > MAX_FILE_BYTES:
                        # Judged from the header, before a byte of the member is read.
                        decoded[name] = UnreadableFile(too_large(member.size, MAX_FILE_BYTES))
                        continue
                    stream = tar.extractfile(member)
                    assert stream is not None  # regular files always have one
                    try:
                        decoded[name] = decode_image_bytes(stream.read(), image_size)
                    except BadImage as err:
                        decoded[name] = err
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"Cannot read the archive {archive}: {type(err).__name__}: {err}. "
                        f"Re-download or re-create it.") from err

    def describe(name: str) -> str:
        return f"{archive}:{name}" if name else str(archive)

    def decode(name: str) -> np.ndarray:
        result = decoded[name]
        if isinstance(result, UnreadableFile):
            raise result
        return result

    plan = plan_image_folder(list(decoded), dirs, split, unwrap=True, describe=describe)
    return _assemble(plan, decode, skip_bad_images=skip_bad_images, describe=describe,
                     source=f"image-folder archive {archive} ({split} split)", progress=False)
