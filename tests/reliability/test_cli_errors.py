"""Every bad input to `resnets train` / `resnets eval` ends with exit code 2 and one paragraph
that names the path or option, says what was expected and how to fix it; never a traceback."""

from __future__ import annotations

import re
import shutil

import pytest
import torch
from PIL import Image

from resnets.checkpoint import LAST


@pytest.fixture(scope="module")
def renamed_classes(color_folder, tmp_path_factory):
    """The colour images under other class names (same number of classes)."""
    root = tmp_path_factory.mktemp("renamed")
    for folder in sorted(color_folder.iterdir()):
        shutil.copytree(folder, root / f"k{folder.name}")
    return root


@pytest.fixture(scope="module")
def fewer_classes(color_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("fewer")
    for folder in sorted(color_folder.iterdir())[:4]:
        shutil.copytree(folder, root / folder.name)
    return root


# Flags with fixed choices (--precision, ...) are refused by argparse itself: see
# test_first_hour.py::test_fixed_choices_are_checked_by_argparse.
BAD_OPTIONS = [
    (["--model", "resnet5O"],
     [r"unknown model 'resnet5O'\. Did you mean: .*resnet5[06].*resnet5[06]", "resnets models"]),
    (["--lr", "-0.1"], [r"lr must be a positive number, got -0\.1"]),
    (["--batch-size", "0"], [r"batch_size must be >= 1, got 0"]),
    (["--iterations", "0"], [r"iterations must be >= 1, got 0"]),
    (["--recipe", "nope"], [r"unknown recipe 'nope'", "cifar10-paper", r"\.toml"]),
    (["--unit", "bogus"], [r"cannot build resnet8 with \{'unit': 'bogus'\}",
                           "unit must be one of", "--unit"]),
    (["--device", "tpu"], [r"unknown device 'tpu'", "cpu"]),
    (["--val-split", "100000"], [r"--val-split 100000 leaves no training images", "240"]),
]


@pytest.mark.parametrize("extra, expected",
                         [pytest.param(*case, id=" ".join(case[0])) for case in BAD_OPTIONS])
def test_bad_training_option(cli, tiny_train_args, tmp_path, extra, expected):
    message = cli.error(*tiny_train_args(tmp_path / "run", *extra))
    for pattern in expected:
        assert re.search(pattern, message), (pattern, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine(cli, tiny_train_args, tmp_path):
    message = cli.error(*tiny_train_args(tmp_path / "run", "--device", "cuda"))
    assert "--device cuda was asked for but no CUDA device is available" in message
    assert "--device cpu" in message


def test_unwritable_out(cli, tiny_train_args, tmp_path):
    (tmp_path / "file").write_text("a regular file")
    message = cli.error(*tiny_train_args(tmp_path / "file" / "run"))
    assert f"cannot write to --out {tmp_path / 'file' / 'run'} (Not a directory)" in message
    assert "Choose a directory you can write to" in message


def _make_data(tmp_path, kind):
    if kind == "missing":
        return tmp_path / "nope"
    if kind == "no images":
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "README.txt").write_text("no images here")
        return tmp_path / "empty"
    if kind == "random file":
        (tmp_path / "data.bin").write_bytes(bytes(range(256)) * 8)
        return tmp_path / "data.bin"
    # One class folder with an image, one without.
    (tmp_path / "tree" / "full").mkdir(parents=True)
    (tmp_path / "tree" / "hollow").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "tree" / "full" / "0.png")
    return tmp_path / "tree"


BAD_DATA = {
    "missing": r"Dataset path {data} does not exist\. Check the --data path\.",
    "no images": r"{data} has no class folders\. Expected <class>/<image> below it\.",
    "random file": r"{data} is a file but not a tar archive\. Point --data at a folder",
    "empty class": r"Class folder {data}/hollow contains no images .*Add images or remove",
}


@pytest.mark.parametrize("kind, expected", BAD_DATA.items(), ids=list(BAD_DATA))
def test_bad_dataset(cli, tiny_train_args, tmp_path, kind, expected):
    data = _make_data(tmp_path, kind)
    message = cli.error(*tiny_train_args(tmp_path / "run", "--data", data))
    assert re.search(expected.format(data=re.escape(str(data))), message), message
    if kind != "empty class":
        assert "Accepted --data layouts:" in message  # the fix: what is accepted


def test_resume_with_incompatible_options(cli, tiny_train_args, trained, tmp_path):
    run = shutil.copytree(trained, tmp_path / "run")
    message = cli.error(*tiny_train_args(run, "--batch-size", "2", "--seed", "3",
                                         "--resume", "auto"))
    assert "cannot resume: these options differ from the checkpoint's run" in message
    assert "batch_size: checkpoint 4, now 2" in message and "seed: checkpoint 0, now 3" in message
    assert "Use the original options, or a new --out directory" in message


@pytest.mark.parametrize("other", ["renamed_classes", "fewer_classes"])
def test_resume_on_data_with_other_classes(cli, tiny_train_args, trained, tmp_path, request,
                                           other):
    run = shutil.copytree(trained, tmp_path / "run")
    data = request.getfixturevalue(other)
    message = cli.error(*tiny_train_args(run, "--data", data, "--resume", "auto"))
    assert f"cannot resume from {run / LAST}: its classes (c0, c1," in message
    assert f"differ from those of image folder {data}" in message
    assert "Resume with the run's original --data" in message


def test_eval_on_data_with_other_classes(cli, trained, renamed_classes):
    message = cli.error("eval", "--checkpoint", trained / LAST, "--data", renamed_classes,
                        "--split", "train", "--device", "cpu")
    assert f"the classes of image folder {renamed_classes}" in message
    assert "do not match the checkpoint's (c0, c1," in message


def test_eval_batch_size_zero(cli, trained):
    message = cli.error("eval", "--checkpoint", trained / LAST, "--batch-size", "0",
                        "--device", "cpu")
    assert "--batch-size must be >= 1, got 0" in message


def test_eval_on_cuda_without_one(cli, trained):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    message = cli.error("eval", "--checkpoint", trained / LAST, "--device", "cuda")
    assert "no CUDA device is available" in message
