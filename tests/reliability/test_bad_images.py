"""A folder mixing unusual but valid images (grayscale, CMYK, RGBA, 16-bit PNG) with broken
files (truncated JPEG, zero bytes, text named .jpg): `resnets train` names every broken file
and stops, or with --skip-bad-images trains on the rest and reports what it skipped."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.data import load_image_set


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Two classes of five valid 32x32 images in five modes; three broken files in class a.
    Returns (root, broken paths)."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        folder = root / name
        folder.mkdir()
        rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(folder / "rgb.png")
        Image.fromarray(rgb).convert("L").save(folder / "gray.jpg")
        Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
        rgba = np.dstack([rgb, rng.integers(0, 256, (32, 32), dtype=np.uint8)])
        Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
        Image.fromarray(rng.integers(0, 65536, (32, 32), dtype=np.uint16)).save(
            folder / "sixteen.png")
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    broken = [root / "a" / "truncated.jpg", root / "a" / "empty.jpg", root / "a" / "text.jpg"]
    broken[0].write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    broken[1].write_bytes(b"")
    broken[2].write_text("this is not an image\n")
    return root, broken


def test_valid_modes_load_as_rgb_and_broken_files_are_counted(mixed_folder, tmp_path):
    root, broken = mixed_folder
    with pytest.warns(UserWarning, match="Skipped 3 unreadable image"):
        data = load_image_set(root, cache_dir=tmp_path, skip_bad_images=True)
    assert data.images.shape == (10, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0] * 5 + [1] * 5
    assert sorted(data.skipped) == sorted(map(str, broken))


def test_train_names_every_broken_file(cli, tiny_train_args, mixed_folder, tmp_path):
    root, broken = mixed_folder
    message = cli.error(*tiny_train_args(tmp_path / "run", "--data", root))
    assert f"3 file(s) in image folder {root} (train split) are not readable images" in message
    assert f"{broken[0]}: " in message  # each path with the reason
    assert f"{broken[1]}: empty file (0 bytes)" in message
    # Pillow's "cannot identify image file <_io.BytesIO object at 0x...>" names a buffer
    assert f"{broken[2]}: not an image Pillow can identify (JPEG, PNG" in message
    assert "BytesIO" not in message
    assert "pass --skip-bad-images to leave them out" in message


def test_cli_warnings_are_one_line_without_python_source(tmp_path):
    """A warning during a command reads like its errors: no file:line, no echoed source."""
    script = "\n".join([
        "import warnings",
        "from resnets import cli",
        "from resnets.commands import models",
        "def run(args):",
        "    warnings.warn('Skipped 1 unreadable image(s) in FOLDER', stacklevel=2)",
        "    return 0",
        "models.run = run",
        "raise SystemExit(cli.main(['models']))"])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr == "resnets models: warning: Skipped 1 unreadable image(s) in FOLDER\n"


def test_train_with_skip_bad_images_reports_the_count(cli, tiny_train_args, mixed_folder,
                                                      tmp_path):
    root, broken = mixed_folder
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="Skipped 3 unreadable image"):
        code, stdout, err = cli(*tiny_train_args(out, "--data", root, "--skip-bad-images"))
    assert code == 0, err
    assert "skipped 3 unreadable image file(s) (--skip-bad-images)" in stdout
    run = json.loads((out / "config.json").read_text())["run"]
    assert run["train_images"] == 10 and run["skipped_images"] == 3
    assert sorted(run["skipped_files"]) == sorted(map(str, broken))
