"""Every ```python block of README.md runs as written.

Each block runs in a fresh namespace. Its working directory is the repository root when every
file it names exists there; otherwise a temporary directory, where the test first writes the
files it names: a tiny resnets checkpoint for each missing ``*.safetensors`` path and a small
image for each missing ``*.jpg``/``*.jpeg``/``*.png`` path (string literals of the block).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every fenced block whose info string is ``python``."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*python\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m.group(1), m.group(2)
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        blocks.append((start + 1, "\n".join(body) + "\n"))
        i += 1
    return blocks


BLOCKS = python_blocks(README.read_text())


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 4  # networks, load_checkpoint, Predictor, backbone
    assert python_blocks("x\n```python\na = 1\n```\n```bash\nb\n```\n") == [(3, "a = 1\n")]


def named_files(code: str) -> list[str]:
    """String literals of ``code`` that name a checkpoint or an image file."""
    return [node.value for node in ast.walk(ast.parse(code))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value.lower().endswith((".safetensors", *IMAGE_SUFFIXES))]


def write_tiny_checkpoint(path: Path) -> None:
    from resnets import create_model
    from resnets.data import CIFAR10_CLASSES
    from resnets.serve.weights import ImportedWeights

    torch.manual_seed(0)
    record = {"kind": "weights", "model": "resnet8", "model_kwargs": {},
              "classes": list(CIFAR10_CLASSES), "image_size": [3, 32, 32],
              "normalization": {"kind": "channel_mean_std", "mean": [0.49, 0.48, 0.45],
                                "std": [0.25, 0.24, 0.26]},
              "source": {"format": "test", "weights": "tests/test_readme.py"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    ImportedWeights(create_model("resnet8").eval(), record).save(path)


def write_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
def test_python_block_runs(line, code, tmp_path, one_thread):
    missing = [f for f in named_files(code) if not (ROOT / f).exists()]
    workdir = tmp_path if missing else ROOT
    for name in missing:
        target = tmp_path / name
        if target.suffix == ".safetensors":
            write_tiny_checkpoint(target)
        else:
            write_image(target)
    before = os.getcwd()
    os.chdir(workdir)
    try:
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    finally:
        os.chdir(before)


def test_documented_api_exists():
    """Names the README's prose uses, reachable from a bare ``import resnets``."""
    import resnets

    assert callable(resnets.load_checkpoint) and callable(resnets.create_model)
    assert resnets.serve.predict.Predictor.from_checkpoint
    assert resnets.checkpoint.load_state_dict_for_model
    assert resnets.serve.backbone.fpn_backbone
    assert set(resnets.__all__) <= set(dir(resnets))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        resnets.nope  # noqa: B018


def readme_command(prefix: str) -> list[str]:
    """The arguments after ``resnets`` of the README line that starts with ``prefix``."""
    lines = [line for line in README.read_text().splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one README line starting with {prefix!r}: {lines}"
    return shlex.split(lines[0], comments=True)[1:]


def test_readme_eval_line_runs_as_written(tmp_path, color_folder, monkeypatch, capsys,
                                          one_thread):
    """Training on CIFAR-10's eval line, as written, in a checkout beside ../shared/data: on
    a short run of its train line (a tiny stand-in for the shared archive, a few iterations
    of resnet8), with nothing downloaded."""
    from resnets.cli import main
    from resnets.data import sources

    def no_download(*args, **kwargs):
        raise AssertionError("the README's eval line downloaded data")

    checkout = tmp_path / "resnets"
    checkout.mkdir()
    archive = tmp_path / "shared" / "data" / "cifar10-jpg-train.tar.xz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(color_folder, arcname="cifar10")
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "load_torchvision", no_download)
    monkeypatch.chdir(checkout)
    train = readme_command("resnets train --model resnet20 --data ../shared/")
    assert main([*train, "--model", "resnet8", "--iterations", "4", "--batch-size", "16",
                 "--val-split", "40", "--eval-every", "2", "--save-every", "2", "--log-every",
                 "2", "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    assert main(readme_command("resnets eval --checkpoint runs/r20/")) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["split"], result["n"], result["model"]) == ("val", 40, "resnet8")
    assert "cifar10-jpg-train.tar.xz" in result["data_source"]
