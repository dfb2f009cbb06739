"""Fixtures for tests/serve: a small resnets checkpoint and BN statistics that matter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnets import create_model
from resnets.data import Normalization
from resnets.train.checkpoint import save_checkpoint

CLASSES = [f"c{i}" for i in range(10)]


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


@pytest.fixture(scope="session")
def r8_checkpoint(tmp_path_factory):
    """A resnet8 'weights' checkpoint as `resnets train` writes it: per-pixel-mean
    normalization measured on random images, ten classes, image_size 3x32x32."""
    torch.manual_seed(0)
    model = randomize_bn_(create_model("resnet8"), seed=0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    meta = {"kind": "weights", "model": "resnet8", "model_kwargs": {"num_classes": 10},
            "classes": CLASSES, "normalization": Normalization.fit(images).to_dict(),
            "image_size": [3, 32, 32]}
    path = tmp_path_factory.mktemp("r8") / "best.safetensors"
    save_checkpoint(path, model=model, meta=meta)
    return path
