"""Fixtures shared by all tests: where the shared real data lives, its decoded form, and a
tiny learnable image folder with a matching short training config."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

SHARED_CIFAR_TAR = "cifar10-jpg-train.tar.xz"


def shared_data_dir() -> Path:
    """$RESNETS_SHARED_DATA, else ../shared/data next to the repository root."""
    env = os.environ.get("RESNETS_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_cifar_tar() -> Path:
    """The shared archive of the 50k CIFAR-10 training JPEGs; skips the test when absent."""
    tar = shared_data_dir() / SHARED_CIFAR_TAR
    if not tar.is_file():
        pytest.skip(f"real CIFAR-10 data not found at {tar}; set RESNETS_SHARED_DATA to the "
                    f"folder holding {SHARED_CIFAR_TAR} to run this test")
    return tar


@pytest.fixture(scope="session")
def data_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$RESNETS_CACHE when set (later sessions then reuse decoded data), else a temporary
    cache that lives for this session only."""
    env = os.environ.get("RESNETS_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("resnets-cache")


@pytest.fixture(scope="session")
def cifar_jpg_set(shared_cifar_tar: Path, data_cache_dir: Path):
    """The decoded ImageSet of the shared archive (train split, 32x32), cached in
    `data_cache_dir`."""
    from resnets.data import load_image_set

    return load_image_set(shared_cifar_tar, split="train", cache_dir=data_cache_dir)


# ------------------------------------------------------------------ tiny training data
# Shared by tests/train and tests/reliability (which launches real `resnets` processes).

CLASSES = [f"c{i}" for i in range(10)]


@pytest.fixture(scope="session")
def color_folder(tmp_path_factory):
    """A learnable ImageFolder: each class is a noisy image of its own colour (10 x 24 PNGs)."""
    root = tmp_path_factory.mktemp("colors")
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(len(CLASSES), 3))
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(24):
            img = np.clip(palette[c] + rng.normal(0, 40, size=(32, 32, 3)), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def tiny_config(color_folder, tmp_path):
    """resnet8 on the colour folder: 40 short deterministic iterations on the CPU."""
    from resnets.config import resolve_config

    def make(**overrides):
        values = dict(model="resnet8", data=str(color_folder), cache_dir=str(tmp_path / "cache"),
                      iterations=40, milestones=[30], batch_size=16, val_split=40, lr=0.05,
                      log_every=5, eval_every=10, save_every=10, device="cpu",
                      deterministic=True)
        values.update(overrides)
        return resolve_config("cifar10-paper", **values)

    return make


# ------------------------------------------------------------------ model helpers

def randomize_bn_(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN statistics and affine terms: a fresh BN is the identity in eval mode,
    which would hide a wrong mapping of its tensors."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model


@pytest.fixture(scope="session")
def randomize_bn():
    """`randomize_bn_` for test modules (conftest is not importable under importlib mode)."""
    return randomize_bn_


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread. On CPU the bits of a result depend on the thread
    count (the subprocess tests pin children to one thread too), and on 2 shared cores small
    ops are faster without a second thread's barrier waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def deadline():
    """``with deadline(60):`` raises TimeoutError in the test when the block runs longer than
    that: a test of a former hang fails instead of waiting forever (SIGALRM, main thread)."""

    @contextlib.contextmanager
    def limit(seconds: int = 60):
        def expire(signum, frame):
            raise TimeoutError(f"still running after {seconds} s: the code hangs")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    return limit
