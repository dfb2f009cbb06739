import numpy as np
import pytest
from PIL import Image

from resnets.train.config import resolve_config

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

    def make(**overrides):
        values = dict(model="resnet8", data=str(color_folder), cache_dir=str(tmp_path / "cache"),
                      iterations=40, milestones=[30], batch_size=16, val_split=40, lr=0.05,
                      log_every=5, eval_every=10, save_every=10, device="cpu",
                      deterministic=True)
        values.update(overrides)
        return resolve_config("cifar10-paper", **values)

    return make
