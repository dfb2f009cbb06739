"""Fixtures for tests/serve: a small resnets checkpoint and BN statistics that matter."""

from __future__ import annotations

import pytest
import torch

from resnets import create_model
from resnets.checkpoint import save_checkpoint
from resnets.data import Normalization

CLASSES = [f"c{i}" for i in range(10)]





@pytest.fixture(scope="session")
def r8_checkpoint(tmp_path_factory, randomize_bn):
    """A resnet8 'weights' checkpoint as `resnets train` writes it: per-pixel-mean
    normalization measured on random images, ten classes, image_size 3x32x32."""
    torch.manual_seed(0)
    model = randomize_bn(create_model("resnet8"), seed=0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    meta = {"kind": "weights", "model": "resnet8", "model_kwargs": {"num_classes": 10},
            "classes": CLASSES, "normalization": Normalization.fit(images).to_dict(),
            "image_size": [3, 32, 32]}
    path = tmp_path_factory.mktemp("r8") / "best.safetensors"
    save_checkpoint(path, model=model, meta=meta)
    return path
