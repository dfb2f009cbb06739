"""Data sources: the official CIFAR-10 release, image folders, archives, the decode cache,
the torchvision download, and the real shared data."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data import CIFAR10_CLASSES, ImageSet, load_image_set, split_indices
from resnets.data import sources as sources_module
from resnets.errors import DataError

PER_BATCH = 6  # images per official batch file in these tests


# ------------------------------------------------------------------------------ split_indices


def test_split_indices_is_a_seeded_disjoint_sorted_partition():
    train, val = split_indices(50, 10, seed=3)
    assert len(train) == 40 and len(val) == 10
    assert train.dtype == val.dtype == torch.int64
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(50))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    again_train, again_val = split_indices(50, 10, seed=3)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert not torch.equal(val, split_indices(50, 10, seed=4)[1])


def test_split_indices_edge_sizes():
    train, val = split_indices(7, 0, seed=0)
    assert torch.equal(train, torch.arange(7)) and len(val) == 0
    with pytest.raises(DataError, match="val_split"):
        split_indices(7, 8, seed=0)


# ------------------------------------------------------------------------------ official release


def _official_batches(seed: int = 0) -> dict[str, dict]:
    """Batch dicts in the layout of cifar-10-python.tar.gz (Python 2 byte-string keys)."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {
            b"batch_label": f"{name} of 6".encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, PER_BATCH)],
            b"data": rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(PER_BATCH)],
        }
    first = batches["data_batch_1"][b"data"]
    # Landmarks: the row is the red, green, blue 32x32 planes, each row-major.
    first[0, 0], first[0, 1], first[0, 32] = 10, 11, 12  # red (0,0), (0,1), (1,0)
    first[0, 1024], first[0, 3071] = 13, 14  # green (0,0), blue (31,31)
    return batches


META = {b"label_names": [f"class{k}".encode() for k in range(10)], b"num_vis": 3072}


def _write_official(folder: Path, batches: dict[str, dict], protocol: int = 2,
                    meta: dict | None = META) -> Path:
    folder.mkdir(parents=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    if meta is not None:
        (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return folder


def _expected(batches: dict[str, dict], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images = np.concatenate([batches[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
    labels = sum((batches[n][b"labels"] for n in names), [])
    return torch.from_numpy(images), torch.tensor(labels)


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("form", ["batches_dir", "parent_dir", "tar_gz"])
def test_official_release_layouts(tmp_path, form, protocol):
    batches = _official_batches()
    folder = _write_official(tmp_path / "src" / "cifar-10-batches-py", batches, protocol)
    source = {"batches_dir": folder, "parent_dir": folder.parent}.get(form)
    if form == "tar_gz":
        source = tmp_path / "cifar-10-python.tar.gz"
        with tarfile.open(source, "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")

    for split, n in (("train", 5 * PER_BATCH), ("test", PER_BATCH)):
        data = load_image_set(source, split=split, cache_dir=tmp_path / "cache")
        images, labels = _expected(batches, split)
        assert data.images.shape == (n, 3, 32, 32) and data.images.dtype == torch.uint8
        assert torch.equal(data.images, images) and torch.equal(data.labels, labels)
        assert data.classes == [f"class{k}" for k in range(10)]
        assert "CIFAR-10 python release" in data.source and data.skipped == []

    train = load_image_set(source, cache_dir=tmp_path / "cache")
    assert train.images[0, 0, 0, 0] == 10 and train.images[0, 0, 0, 1] == 11
    assert train.images[0, 0, 1, 0] == 12 and train.images[0, 1, 0, 0] == 13
    assert train.images[0, 2, 31, 31] == 14


def test_official_release_without_meta_uses_cifar10_names(tmp_path):
    folder = _write_official(tmp_path / "cifar-10-batches-py", _official_batches(), meta=None)
    data = load_image_set(folder, split="test", cache_dir=tmp_path / "cache")
    assert data.classes == list(CIFAR10_CLASSES)
    assert data.classes[0] == "airplane" and data.classes[9] == "truck"


def test_official_release_missing_batch_is_named(tmp_path):
    folder = _write_official(tmp_path / "cifar-10-batches-py", _official_batches())
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4"):
        load_image_set(folder, cache_dir=tmp_path / "cache")
    assert len(load_image_set(folder, split="test", cache_dir=tmp_path / "cache")) == PER_BATCH


def test_official_release_wrong_array_shape_is_refused(tmp_path):
    batches = _official_batches()
    batches["test_batch"][b"data"] = np.zeros((PER_BATCH, 100), dtype=np.uint8)
    folder = _write_official(tmp_path / "cifar-10-batches-py", batches)
    with pytest.raises(DataError, match=r"\(n, 3072\)"):
        load_image_set(folder, split="test", cache_dir=tmp_path / "cache")


class _RunsAShellCommand:
    """Unpickling this calls os.system: what a malicious data file would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    batches = _official_batches()
    batches["data_batch_1"] = {b"data": _RunsAShellCommand(f"touch {marker}"), b"labels": []}
    folder = _write_official(tmp_path / "cifar-10-batches-py", batches)
    with pytest.raises(DataError, match="data_batch_1") as err:
        load_image_set(folder, cache_dir=tmp_path / "cache")
    assert "system" in str(err.value)
    assert not marker.exists(), "the pickle's command must never run"


# ------------------------------------------------------------------------------ image folders


def _save(path: Path, img: Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)


def _noise(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _image_tree(root: Path) -> dict[str, np.ndarray]:
    """A small tree of every awkward image mode; returns the exact RGB expected for the
    lossless files."""
    exact = {}
    exact["dog/a_rgb.png"] = _noise(1)
    _save(root / "dog/a_rgb.png", Image.fromarray(exact["dog/a_rgb.png"]))
    _save(root / "dog/b_gray.jpg", Image.new("L", (32, 32), 128))
    _save(root / "dog/c_cmyk.jpg", Image.new("CMYK", (32, 32), (0, 255, 255, 0)), quality=95)
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:, :16] = (200, 100, 50, 255)  # opaque
    rgba[:, 16:24] = (200, 100, 50, 128)  # half transparent
    rgba[:, 24:] = (10, 20, 30, 0)  # fully transparent
    _save(root / "cat/rgba.png", Image.fromarray(rgba, "RGBA"))
    wide = np.zeros((32, 32), dtype=np.uint16)
    wide[:, 8:16], wide[:, 16:] = 25700, 65535  # 100 and 255 in 8 bits
    _save(root / "cat/sixteen.png", Image.fromarray(wide))  # mode I;16
    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, 30, 60, 90] + [0] * 762)
    _save(root / "cat/palette.png", palette)
    _save(root / "cat/large.bmp", Image.new("RGB", (64, 48), (7, 8, 9)))
    (root / "cat/notes.txt").write_text("not an image, ignored")
    (root / "cat/.hidden.png").write_bytes(b"ignored: hidden")
    return exact


def _bad_files(folder: Path) -> list[Path]:
    buffer = io.BytesIO()
    Image.fromarray(_noise(2)).save(buffer, "JPEG")
    truncated, empty, text = folder / "truncated.jpg", folder / "empty.jpg", folder / "text.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    empty.write_bytes(b"")
    text.write_text("this is not a JPEG\n")
    return [truncated, empty, text]


def _pixel(data: ImageSet, index: int, y: int, x: int) -> list[int]:
    return data.images[index, :, y, x].tolist()


def test_image_folder_decodes_every_mode_to_rgb8(tmp_path):
    exact = _image_tree(tmp_path / "tree")
    data = load_image_set(tmp_path / "tree", cache_dir=tmp_path / "cache")
    assert data.classes == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert data.images.shape == (7, 3, 32, 32) and data.images.dtype == torch.uint8
    # cat: large.bmp, palette.png, rgba.png, sixteen.png (sorted); dog: a_rgb, b_gray, c_cmyk
    assert data.images[0].flatten(1).T.unique(dim=0).tolist() == [[7, 8, 9]]  # resized 64x48
    assert _pixel(data, 1, 5, 5) == [30, 60, 90]
    assert _pixel(data, 2, 0, 0) == [200, 100, 50]
    assert _pixel(data, 2, 0, 20) == [100, 50, 25]  # composited onto black by alpha 128
    assert _pixel(data, 2, 0, 30) == [0, 0, 0]
    assert _pixel(data, 3, 0, 0) == [0] * 3
    assert _pixel(data, 3, 0, 10) == [100] * 3  # 16-bit values scale down, not clip
    assert _pixel(data, 3, 0, 20) == [255] * 3
    assert torch.equal(data.images[4], torch.from_numpy(exact["dog/a_rgb.png"]).permute(2, 0, 1))
    gray = data.images[5].int()
    assert (gray - 128).abs().max() <= 2 and torch.equal(gray[0], gray[2])
    red = data.images[6].int()
    assert (red[0] - 255).abs().max() <= 3 and red[1:].max() <= 3


def test_image_folder_split_subfolders(tmp_path):
    for split, color in (("train", 1), ("test", 2)):
        for cls in ("a", "b"):
            _save(tmp_path / "tree" / split / cls / "x.png", Image.new("RGB", (32, 32),
                                                                      (color,) * 3))
    for split, color in (("train", 1), ("test", 2)):
        data = load_image_set(tmp_path / "tree", split=split, cache_dir=tmp_path / "cache")
        assert data.classes == ["a", "b"] and len(data) == 2
        assert data.images.unique().tolist() == [color]


def test_image_folder_with_train_only_refuses_test_split(tmp_path):
    _save(tmp_path / "tree/train/a/x.png", Image.new("RGB", (32, 32)))
    with pytest.raises(DataError, match="no test/ folder"):
        load_image_set(tmp_path / "tree", split="test", cache_dir=tmp_path / "cache")


def test_bad_images_fail_by_default_naming_every_file(tmp_path):
    _image_tree(tmp_path / "tree")
    bad = _bad_files(tmp_path / "tree/dog")
    with pytest.raises(DataError, match="--skip-bad-images") as err:
        load_image_set(tmp_path / "tree", cache_dir=tmp_path / "cache")
    for path in bad:
        assert str(path) in str(err.value)


def test_bad_images_are_skipped_counted_and_warned_on_request(tmp_path):
    _image_tree(tmp_path / "tree")
    bad = _bad_files(tmp_path / "tree/dog")
    for _ in range(2):  # the second call comes from the cache and must still report them
        with pytest.warns(UserWarning, match="Skipped 3 unreadable"):
            data = load_image_set(tmp_path / "tree", cache_dir=tmp_path / "cache",
                                  skip_bad_images=True)
        assert sorted(data.skipped) == sorted(str(p) for p in bad)
        assert len(data) == 7 and data.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_empty_class_folder_is_named(tmp_path):
    _image_tree(tmp_path / "tree")
    (tmp_path / "tree/zebra").mkdir()
    with pytest.raises(DataError, match="contains no images") as err:
        load_image_set(tmp_path / "tree", cache_dir=tmp_path / "cache")
    assert str(tmp_path / "tree/zebra") in str(err.value)


def test_missing_path_is_named_with_the_accepted_layouts(tmp_path):
    missing = tmp_path / "no/such/data"
    with pytest.raises(DataError) as err:
        load_image_set(missing, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert str(missing) in message and "--data" in message and "ROOT/<class>" in message


def test_mixed_sizes_need_image_size(tmp_path):
    _save(tmp_path / "tree/a/small.png", Image.new("RGB", (16, 16)))
    _save(tmp_path / "tree/a/wide.png", Image.new("RGB", (20, 16)))
    with pytest.raises(DataError, match="image_size"):
        load_image_set(tmp_path / "tree", image_size=None, cache_dir=tmp_path / "cache")
    data = load_image_set(tmp_path / "tree", image_size=16, cache_dir=tmp_path / "cache")
    assert data.images.shape == (2, 3, 16, 16)


# ------------------------------------------------------------------------------ archives, cache


def _tar(tree: Path, archive: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:xz" if archive.suffix == ".xz" else "w") as tar:
        tar.add(tree, arcname=arcname)
    return archive


def _spy_on_decoding(monkeypatch) -> list:
    calls = []
    real = sources_module._decode_source

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(sources_module, "_decode_source", spy)
    return calls


@pytest.mark.parametrize("arcname", ["train", "cifar/train", "."])
def test_image_folder_archive_matches_the_folder_and_is_decoded_once(tmp_path, monkeypatch,
                                                                       arcname):
    _image_tree(tmp_path / "tree")
    archive = _tar(tmp_path / "tree", tmp_path / "tree.tar.xz", arcname)
    folder = load_image_set(tmp_path / "tree", cache_dir=tmp_path / "cache")
    calls = _spy_on_decoding(monkeypatch)

    first = load_image_set(archive, cache_dir=tmp_path / "cache")
    second = load_image_set(archive, cache_dir=tmp_path / "cache")
    assert len(calls) == 1, "the second call must load the decoded cache"
    assert len(list((tmp_path / "cache/decoded").glob("*.safetensors"))) == 2
    for data in (first, second):
        assert torch.equal(data.images, folder.images)
        assert torch.equal(data.labels, folder.labels) and data.classes == folder.classes
        assert data.source == f"image-folder archive {archive} (train split)"

    os.utime(archive, ns=(0, 10**9))  # a changed archive is decoded again
    load_image_set(archive, cache_dir=tmp_path / "cache")
    assert len(calls) == 2


def test_changed_folder_is_decoded_again(tmp_path, monkeypatch):
    _image_tree(tmp_path / "tree")
    calls = _spy_on_decoding(monkeypatch)
    assert len(load_image_set(tmp_path / "tree", cache_dir=tmp_path / "cache")) == 7
    _save(tmp_path / "tree/dog/new.png", Image.new("RGB", (32, 32)))
    assert len(load_image_set(tmp_path / "tree", cache_dir=tmp_path / "cache")) == 8
    assert len(load_image_set(tmp_path / "tree", cache_dir=tmp_path / "cache")) == 8
    assert len(calls) == 2


def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch):
    _image_tree(tmp_path / "tree")
    good = load_image_set(tmp_path / "tree", cache_dir=tmp_path / "cache")
    [cache_file] = (tmp_path / "cache/decoded").glob("*.safetensors")
    cache_file.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    calls = _spy_on_decoding(monkeypatch)
    with pytest.warns(UserWarning, match="decoded-data cache"):
        again = load_image_set(tmp_path / "tree", cache_dir=tmp_path / "cache")
    assert torch.equal(again.images, good.images) and len(calls) == 1
    load_image_set(tmp_path / "tree", cache_dir=tmp_path / "cache")  # rebuilt: a clean hit
    assert len(calls) == 1


@pytest.mark.parametrize("member", ["../evil.png", "/tmp/evil.png"])
def test_archive_with_escaping_member_is_refused(tmp_path, member):
    archive = tmp_path / "evil.tar"
    payload = io.BytesIO()
    Image.new("RGB", (32, 32)).save(payload, "PNG")
    with tarfile.open(archive, "w") as tar:
        for name in ("train/a/ok.png", member):
            info = tarfile.TarInfo(name)
            info.size = len(payload.getvalue())
            tar.addfile(info, io.BytesIO(payload.getvalue()))
    with pytest.raises(DataError, match="unsafe member") as err:
        load_image_set(archive, cache_dir=tmp_path / "cache")
    assert member in str(err.value)
    assert not (tmp_path / "evil.png").exists()


def test_non_archive_file_is_refused(tmp_path):
    (tmp_path / "data.zip").write_bytes(b"PK\x03\x04 not a tar")
    with pytest.raises(DataError, match="not a tar archive"):
        load_image_set(tmp_path / "data.zip", cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------------------ torchvision


def test_failed_download_points_to_data_flag(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match="download") as err:
        load_image_set(None, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "--data" in message and "cifar-10-python.tar.gz" in message
    assert str(tmp_path / "cache" / "torchvision") in message


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(DataError, match="split"):
        load_image_set(tmp_path, split="val", cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------------------ real data


@pytest.mark.realdata
def test_shared_cifar10_archive(cifar_jpg_set, shared_cifar_tar, data_cache_dir, monkeypatch):
    data = cifar_jpg_set
    assert data.images.shape == (50000, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.classes == list(CIFAR10_CLASSES)
    assert torch.equal(torch.bincount(data.labels), torch.full((10,), 5000))
    assert data.skipped == []
    # The fixture decoded into a cache; loading again must come from it.
    calls = _spy_on_decoding(monkeypatch)
    again = load_image_set(shared_cifar_tar, cache_dir=data_cache_dir)
    assert calls == [] and torch.equal(again.images, data.images)


def test_flat_image_folder_has_no_test_split(tmp_path):
    # A flat <class>/<image> tree is training data: as a "test split" it would report
    # training images as test error.
    _save(tmp_path / "tree/a/x.png", Image.new("RGB", (32, 32)))
    assert len(load_image_set(tmp_path / "tree", split="train", cache_dir=tmp_path / "c")) == 1
    with pytest.raises(DataError, match="has no test/ folder, so it has no test split"):
        load_image_set(tmp_path / "tree", split="test", cache_dir=tmp_path / "cache")
