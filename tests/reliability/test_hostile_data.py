"""Hostile data folders and archives: link loops, links out of a class folder, FIFOs, huge
archive members and images moved between classes. Each ends in a clear error or a counted
warning with the right labels, never in a hang, a full memory or stale labels.

Tests that hung before the fix run under `deadline`, which raises instead of waiting."""

from __future__ import annotations

import io
import os
import signal
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnets.data import load_image_set
from resnets.data.files import MAX_FILE_BYTES, list_files
from resnets.data.folder import FolderDataset
from resnets.errors import DataError

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGALRM") or not hasattr(os, "mkfifo"),
                                reason="needs POSIX signals, links and FIFOs")




def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def _two_classes(root: Path) -> Path:
    """cat/0.png (all pixels 10) and dog/0.png (all 200)."""
    _png(root / "cat" / "0.png", 10)
    _png(root / "dog" / "0.png", 200)
    return root


def _labels_by_value(data) -> dict[int, list[str]]:
    """{first pixel value: [class of every image with it]}."""
    found: dict[int, list[str]] = {}
    for image, label in zip(data.images, data.labels, strict=True):
        found.setdefault(int(image[0, 0, 0]), []).append(data.classes[int(label)])
    return found


# ------------------------------------------------------------------ item: folder link loops


def test_link_loops_in_a_class_folder_end_and_are_warned(tmp_path, deadline):
    root = _two_classes(tmp_path / "data")
    # Two links to the folder itself: os.walk(followlinks=True) branches twice per level.
    os.symlink(".", root / "cat" / "a")
    os.symlink(".", root / "cat" / "b")
    with deadline(), pytest.warns(UserWarning, match=r"Skipped 2 folder link\(s\)") as caught:
        data = load_image_set(root, cache_dir=tmp_path / "cache", image_size=None)
    assert _labels_by_value(data) == {10: ["cat"], 200: ["dog"]}
    message = str(caught[0].message)
    assert str(root / "cat" / "a") in message and "already read" in message


def test_link_out_of_a_class_folder_does_not_relabel_images(tmp_path, deadline):
    root = _two_classes(tmp_path / "data")
    os.symlink("..", root / "cat" / "up")  # would show dog/0.png as cat/up/dog/0.png
    os.symlink("../dog", root / "cat" / "dogs")  # would label dog's images cat
    with deadline(), pytest.warns(UserWarning, match="out of its class folder") as caught:
        data = load_image_set(root, cache_dir=tmp_path / "cache", image_size=None)
    assert _labels_by_value(data) == {10: ["cat"], 200: ["dog"]}
    message = str(caught[0].message)
    assert "Skipped 2 folder link(s)" in message
    assert str(root / "cat" / "up") in message and str(root / "cat" / "dogs") in message


def test_linked_class_folders_are_still_followed(tmp_path):
    """A class folder that is a link (data spread over disks) is read as before."""
    elsewhere = tmp_path / "disk2" / "dog"
    _png(elsewhere / "0.png", 200)
    _png(tmp_path / "data" / "cat" / "0.png", 10)
    os.symlink(elsewhere, tmp_path / "data" / "dog")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_image_set(tmp_path / "data", cache_dir=tmp_path / "cache", image_size=None)
    assert _labels_by_value(data) == {10: ["cat"], 200: ["dog"]}


def test_a_class_folder_linking_to_the_root_is_skipped(tmp_path, deadline):
    root = _two_classes(tmp_path / "data")
    os.symlink(".", root / "all")  # a "class" holding every other class
    with deadline(), pytest.warns(UserWarning, match="already read"):
        data = load_image_set(root, cache_dir=tmp_path / "cache", image_size=None)
    assert data.classes == ["cat", "dog"]


def test_folder_dataset_survives_loops_and_links_out(tmp_path, deadline):
    """The folder pipeline (train/eval of ImageNet-family nets) walks with the same rules."""
    root = _two_classes(tmp_path / "data")
    os.symlink(".", root / "cat" / "a")
    os.symlink(".", root / "cat" / "b")
    os.symlink("..", root / "cat" / "up")
    with deadline(), pytest.warns(UserWarning, match=r"Skipped 3 folder link\(s\)"):
        ds = FolderDataset(root)
    assert ds.classes == ["cat", "dog"]
    assert ds.samples == [(str(root / "cat" / "0.png"), 0), (str(root / "dog" / "0.png"), 1)]


def test_list_files_ends_on_a_loop(tmp_path, deadline):
    """The walker offered to other readers of folders (e.g. predict)."""
    root = _two_classes(tmp_path / "data")
    os.symlink("..", root / "cat" / "up")
    with deadline(), pytest.warns(UserWarning, match="already read"):
        files = list_files(root)
    assert files == [root / "cat" / "0.png", root / "dog" / "0.png"]


def test_unlistable_folder_is_named(tmp_path, permissions_bind):
    root = _two_classes(tmp_path / "data")
    locked = root / "dog" / "more"
    locked.mkdir()
    locked.chmod(0)
    try:
        with permissions_bind(), pytest.raises(DataError,
                                               match=f"Cannot list the folder {locked}"):
            load_image_set(root, cache_dir=tmp_path / "cache", image_size=None)
    finally:
        locked.chmod(0o755)


def test_unlistable_folder_is_named_when_listing_fails(tmp_path, deny):
    """The same with the refusal injected at the listing call: no capabilities or chmod."""
    root = _two_classes(tmp_path / "data")
    locked = root / "dog" / "more"
    locked.mkdir()
    deny(locked)
    with pytest.raises(DataError, match=f"Cannot list the folder {locked}: .*Permission denied"):
        load_image_set(root, cache_dir=tmp_path / "cache", image_size=None)


# ------------------------------------------------------------- item: huge archive members


class _Zeros(io.RawIOBase):
    """``n`` zero bytes, produced as they are read (no n-byte buffer in the test)."""

    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        k = min(len(buffer), self.left)
        buffer[:k] = bytes(k)
        self.left -= k
        return k


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None, size: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if data is not None else size
    tar.addfile(info, io.BytesIO(data) if data is not None else _Zeros(size))


def _png_bytes(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def extractions(monkeypatch):
    """Names of the archive members whose data is read (TarFile.extractfile calls)."""
    names: list[str] = []
    original = tarfile.TarFile.extractfile

    def spy(self, member):
        names.append(member.name if isinstance(member, tarfile.TarInfo) else member)
        return original(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", spy)
    return names


def test_huge_image_member_is_refused_before_reading(tmp_path, extractions):
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        _add(tar, "cat/0.png", _png_bytes(10))
        _add(tar, "cat/big.png", size=MAX_FILE_BYTES + 1)  # a few kB once compressed
        _add(tar, "dog/0.png", _png_bytes(200))
    assert archive.stat().st_size < 2**20
    with pytest.raises(DataError) as err:
        load_image_set(archive, cache_dir=tmp_path / "cache", image_size=None)
    message = str(err.value)
    assert f"{archive}:cat/big.png: {MAX_FILE_BYTES + 1} bytes" in message
    assert "cap of 64 MiB per file" in message
    assert "cat/big.png" not in extractions
    with pytest.warns(UserWarning, match="big.png"):
        data = load_image_set(archive, cache_dir=tmp_path / "cache", image_size=None,
                              skip_bad_images=True)
    assert _labels_by_value(data) == {10: ["cat"], 200: ["dog"]}


def test_huge_cifar_batch_member_is_refused_before_reading(tmp_path, extractions):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        _add(tar, "cifar-10-batches-py/data_batch_1", size=MAX_FILE_BYTES + 1)
    with pytest.raises(DataError, match=r"member .*data_batch_1 is \d+ bytes, over the cap of "
                                        r"64 MiB per file"):
        load_image_set(archive, cache_dir=tmp_path / "cache")
    assert extractions == []


def test_huge_file_in_a_folder_is_named_not_read(tmp_path):
    root = _two_classes(tmp_path / "data")
    with open(root / "cat" / "big.png", "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: takes no disk space
    with pytest.raises(DataError, match=r"big\.png: \d+ bytes, over the cap of 64 MiB"):
        load_image_set(root, cache_dir=tmp_path / "cache", image_size=None)


# ------------------------------------------------------------------------- item: FIFOs


def test_fifo_as_data_is_refused(tmp_path, cli, deadline):
    fifo = tmp_path / "data.tar"
    os.mkfifo(fifo)
    with deadline():
        message = cli.error("train", "--data", fifo, "--out", tmp_path / "run",
                            "--device", "cpu", "--iterations", "1")
    assert f"Dataset path {fifo} is a named pipe (FIFO), not a folder or a regular file" \
        in message


def test_fifo_in_a_data_folder_is_a_bad_file(tmp_path, deadline):
    root = _two_classes(tmp_path / "data")
    os.mkfifo(root / "cat" / "1.png")
    with deadline(), pytest.raises(DataError, match=r"1\.png: a named pipe \(FIFO\), not a "
                                                     r"regular file"):
        load_image_set(root, cache_dir=tmp_path / "cache", image_size=None)
    with deadline(), pytest.warns(UserWarning, match="1.png"):
        data = load_image_set(root, cache_dir=tmp_path / "cache", image_size=None,
                              skip_bad_images=True)
    assert _labels_by_value(data) == {10: ["cat"], 200: ["dog"]}


def test_fifo_in_the_folder_pipeline_is_a_bad_file(tmp_path, deadline):
    root = _two_classes(tmp_path / "data")
    os.mkfifo(root / "cat" / "1.png")
    ds = FolderDataset(root)
    index = [Path(p).name for p, _ in ds.samples].index("1.png")
    with deadline(), pytest.raises(DataError, match=r"1\.png: a named pipe \(FIFO\)"):
        ds[index]


# ----------------------------------------------------------- item: cache after a move


def test_image_moved_between_classes_with_times_kept_is_relabelled(tmp_path):
    """What `rsync -a` / `cp -a` do: the file moves, every size and mtime stays the same."""
    root = tmp_path / "data"
    _png(root / "a" / "0.png", 10)
    _png(root / "a" / "1.png", 20)
    _png(root / "b" / "2.png", 30)
    first = load_image_set(root, cache_dir=tmp_path / "cache", image_size=None)
    assert _labels_by_value(first) == {10: ["a"], 20: ["a"], 30: ["b"]}

    folders = [root, root / "a", root / "b"]
    times = {p: p.stat().st_mtime_ns for p in [*folders, root / "a" / "1.png"]}
    (root / "a" / "1.png").rename(root / "b" / "1.png")
    os.utime(root / "b" / "1.png", ns=(times[root / "a" / "1.png"],) * 2)
    for folder in folders:
        os.utime(folder, ns=(times[folder],) * 2)

    again = load_image_set(root, cache_dir=tmp_path / "cache", image_size=None)
    assert _labels_by_value(again) == {10: ["a"], 20: ["b"], 30: ["b"]}
