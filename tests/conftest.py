"""Fixtures shared by all tests: where the shared real data lives, and its decoded form."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
