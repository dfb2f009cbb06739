"""Reading data files safely: a folder walk that always ends, and bounded reads.

Data folders come from users and from other people's archives and scripts, so the walk must
end and every read must be bounded, whatever links, pipes or huge files a folder holds. Every
data module reads files through `read_file` and walks folders through `walk_tree` (or
`list_files`).
"""

from __future__ import annotations

import os
import posixpath
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

__all__ = [
    "MAX_FILE_BYTES",
    "FileTree",
    "UnreadableFile",
    "file_kind",
    "list_files",
    "read_file",
    "too_large",
    "walk_order",
    "walk_tree",
    "warn_skipped_links",
]

# The largest single file read into memory, from a folder or an archive. A CIFAR-10 python
# batch is 31 MB and an ImageNet JPEG rarely 1 MB; the cap keeps a hostile archive (a sparse
# 1 GiB member compresses to a few kB) from taking the machine's memory.
MAX_FILE_BYTES = 64 * 2**20


class UnreadableFile(Exception):
    """A file that was not read whole: missing, not a regular file, or over the size cap.

    The message says why, without the path; the caller names the file. `BadImage` (bytes
    that do not decode) is a kind of it, so one ``except`` covers reading and decoding.
    """


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, for error messages."""
    for test, kind in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return kind
    return "not a regular file"


def read_file(path: str | os.PathLike, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Opened without blocking and checked with fstat before any read: reading a FIFO would wait
    forever for a writer, and a device or a huge file would never end or fill memory. The check
    is on the opened descriptor, so the file cannot be swapped between check and read.

    Raises:
        UnreadableFile: the file is not a regular file, is larger than ``limit``, or cannot be
            read; the message says which.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise UnreadableFile(f"cannot read: {err}") from err
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(f"{file_kind(info.st_mode)}, not a regular file; only regular "
                                 f"files are read")
        if info.st_size > limit:
            raise UnreadableFile(too_large(info.st_size, limit))
        try:
            data = stream.read(limit + 1)
        except OSError as err:
            raise UnreadableFile(f"cannot read: {err}") from err
    if len(data) > limit:  # grew while being read
        raise UnreadableFile(too_large(len(data), limit))
    return data


def too_large(size: int, limit: int) -> str:
    """Why a file of ``size`` bytes is refused, naming the cap to change."""
    return (f"{size} bytes, over the cap of {limit // 2**20} MiB per file "
            f"(resnets.data.files.MAX_FILE_BYTES)")


@dataclass
class FileTree:
    """The visible entries below a folder, as relative POSIX names (see `walk_tree`)."""

    files: dict[str, os.stat_result | None]  # every non-folder; stat None: not asked for, or
    #                                          a dangling link
    dirs: set[str]  # folders walked into, links included
    skipped: list[tuple[str, str]]  # (name, why) of folder links not followed


def walk_tree(root: Path, class_depth: int | None = None, stat_files: bool = True) -> FileTree:
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
    tree = FileTree({}, set(), [])
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
            name = posixpath.join(folder, entry.name)
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


def warn_skipped_links(root: Path, tree: FileTree) -> None:
    """Warn about the folder links `walk_tree` did not follow, if any (up to three named)."""
    if tree.skipped:
        listed = "; ".join(f"{root / name} {why}" for name, why in tree.skipped[:3])
        more = f" (and {len(tree.skipped) - 3} more)" if len(tree.skipped) > 3 else ""
        warnings.warn(f"Skipped {len(tree.skipped)} folder link(s) in {root}: {listed}{more}. "
                      f"Remove the link(s), or replace them by the folders themselves.",
                      stacklevel=3)


def list_files(root: str | os.PathLike) -> list[Path]:
    """Every visible file below the folder ``root``, sorted, with folder links followed safely
    (see `walk_tree`: loops and second links to a folder are skipped, with a warning).

    Files that are not regular (pipes, devices) and dangling links are listed too: reading
    them with `read_file` gives a clear error instead of blocking."""
    base = Path(root)
    tree = walk_tree(base)
    warn_skipped_links(base, tree)
    return [base / name for name in sorted(tree.files, key=walk_order)]


def walk_order(name: str) -> tuple[str, str]:
    """Sort key of relative names in os.walk's order, as torchvision's ImageFolder sorts it:
    folder by folder, then by name."""
    return posixpath.dirname(name), posixpath.basename(name)
