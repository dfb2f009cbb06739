"""What a new user meets first: `train --help` that documents every flag with its default,
and bad values on the command line that end in one clear error (exit code 2), never in a
traceback."""

from __future__ import annotations

import argparse
import os
import pickle

import numpy as np
import pytest

from resnets.cli import build_parser, main
from resnets.commands.train import CHOICES, FIELDS
from resnets.config import resolve_config

# Flags of `train` that are not recipe values, so they have no recipe default to show.
RUN_FLAGS = {"-h", "--recipe", "--out", "--resume", "--overwrite", "--quiet"}


def _train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def _exit(capsys, argv: list) -> tuple[int, str]:
    """``(exit status, stderr)`` of ``resnets ARGV``, run in this process: a status returned
    by `main` or given to SystemExit by argparse (both are the process's exit status)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def _one_clear_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err and "error: " in err, err
    return err


# ------------------------------------------------------------------------ train --help


def test_every_train_flag_has_help_and_its_default():
    defaults = resolve_config("cifar10-paper")
    for action in _train_parser()._actions:
        flag = action.option_strings[0]
        if flag in RUN_FLAGS:
            continue
        assert action.help and len(action.help) > 20, flag
        assert "(default: " in action.help, flag
    helps = {a.dest: a.help for a in _train_parser()._actions}
    for name in FIELDS:
        value = getattr(defaults, name)
        shown = "none" if value is None else str(value)
        assert f"(default: {shown}" in helps[name], (name, helps[name])
    assert "(default: 32000,48000 for 64000 iterations" in helps["milestones"]
    assert "(default: 256,480)" in helps["scale_range"]
    assert "(default: none; 0.01 for cifar nets of 110 layers or more)" in helps["warmup_lr"]


def test_switches_and_normalization_are_explained(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--channels-last, --no-channels-last channels_last memory format" in text
    assert "--compile, --no-compile torch.compile the training step's model (default: off)" \
        in text
    assert "--deterministic, --no-deterministic deterministic kernels" in text
    assert ("per_pixel_mean: subtract the training split's mean image (the paper; device "
            "pipeline only); channel_mean_std: per-channel mean and std (the folder pipeline's: "
            "ImageNet's statistics, or with --init the pretrained net's own) (default: "
            "per_pixel_mean)") in text
    assert "defaults shown are those of the default recipe, cifar10-paper" in text


@pytest.mark.parametrize("order", ["recipe first", "help first"])
def test_help_shows_the_defaults_of_the_recipe_given(capsys, order):
    args = ["--recipe", "imagenet-paper", "--help"]
    assert main(["train", *(args if order == "recipe first" else args[::-1][:1] + args[:2])]) \
        == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "defaults shown are those of the recipe imagenet-paper;" in text
    flags = text[text.index("recipe overrides:"):]  # past the usage line
    for flag, value in (("--model MODEL", "resnet50"), ("--batch-size BATCH_SIZE", "256"),
                        ("--pipeline {", "folder"), ("--iterations ITERATIONS", "600000")):
        start = flags.index(flag)
        assert f"(default: {value}" in flags[start:flags.index(" --", start + 3)], flag
    assert "(default: resnet20)" not in text and "(default: 64000" not in text


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_fixed_choices_are_checked_by_argparse(capsys, name, tmp_path):
    flag = "--" + name.replace("_", "-")
    code, err = _exit(capsys, ["train", flag, "bogus", "--out", tmp_path / "run"])
    message = _one_clear_error(code, err)
    assert f"argument {flag}: invalid choice: 'bogus'" in message
    assert not (tmp_path / "run").exists()
    for value in CHOICES[name]:  # every listed choice is one the config accepts
        # (the folder pipeline with the one normalization it runs)
        extra = {"normalization": "channel_mean_std"} if value == "folder" else {}
        assert getattr(resolve_config(**{name: value}, **extra), name) == value


# ------------------------------------------------------------ clear errors on bad values


def test_negative_num_classes(cli, tiny_train_args, tmp_path):
    message = cli.error(*tiny_train_args(tmp_path / "run", "--num-classes", "-3"))
    assert "num_classes must be >= 1, got -3" in message


def test_scale_range_needs_two_values(capsys, tiny_train_args, tmp_path):
    code, err = _exit(capsys, tiny_train_args(tmp_path / "run", "--scale-range", "300"))
    message = _one_clear_error(code, err)
    assert ("argument --scale-range: expected LO,HI (2 comma-separated whole numbers), "
            "got '300'") in message


def test_seed_beyond_64_bits(capsys, tiny_train_args, tmp_path):
    code, err = _exit(capsys, tiny_train_args(tmp_path / "run", "--seed", 2**70))
    message = _one_clear_error(code, err)
    assert f"argument --seed: {2**70} is out of range" in message
    assert "from 0 to 2**63-1" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("device, note", [("mps", "Apple GPUs (mps) are not supported"),
                                          ("meta", "nothing can be trained on them")])
def test_devices_nothing_trains_on(cli, tiny_train_args, tmp_path, device, note):
    message = cli.error(*tiny_train_args(tmp_path / "run", "--device", device))
    assert f"unknown device '{device}' for --device: use auto, cpu, cuda or cuda:N" in message
    assert note in message


def test_eval_negative_workers(capsys, trained, color_folder, tmp_path):
    code, err = _exit(capsys, ["eval", "--checkpoint", trained / "last.safetensors",
                               "--data", color_folder, "--cache-dir", tmp_path,
                               "--device", "cpu", "--workers", "-1"])
    message = _one_clear_error(code, err)
    assert "--workers" in message and "-1" in message


def test_non_utf8_classes_file(cli, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_bytes(b"cat\nd\xf6g\n")  # Latin-1, not UTF-8
    message = cli.error("import", "--weights", tmp_path / "w.pth", "--out",
                        tmp_path / "w.safetensors", "--classes", classes)
    assert "not UTF-8" in message and "save it as UTF-8" in message


def _official_release(folder, label_names) -> None:
    """A tiny CIFAR-10 python release (2 images per batch) with the given batches.meta."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [0, 1]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": label_names},
                                                       protocol=2))


def test_non_utf8_batches_meta(cli, tiny_train_args, tmp_path):
    release = tmp_path / "cifar-10-batches-py"
    _official_release(release, [b"cat", b"d\xf6g"])
    message = cli.error(*tiny_train_args(tmp_path / "run", "--data", release))
    assert "batches.meta in CIFAR-10 python release" in message
    assert "holds a class name that is not UTF-8 text (b'd\\xf6g'" in message
    assert "delete batches.meta to use the standard CIFAR-10 class names" in message


def test_random_bytes_in_a_pth_are_not_called_code(cli, tiny_train_args, tmp_path):
    weights = tmp_path / "noise.pth"
    weights.write_bytes(np.random.default_rng(0).bytes(4096))
    message = cli.error(*tiny_train_args(tmp_path / "run", "--init", weights))
    assert f"{weights} is not a readable torch file" in message
    assert "could run code" not in message


def test_a_pickle_that_imports_code_is_still_named(cli, tiny_train_args, tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("true",))

    weights = tmp_path / "evil.pth"
    weights.write_bytes(pickle.dumps({"w": RunsCode()}))
    message = cli.error(*tiny_train_args(tmp_path / "run", "--init", weights))
    assert "needs arbitrary unpickling, which could run code" in message
    assert "system" in message
