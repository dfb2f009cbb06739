"""State dicts move between resnets ("v1.5" layout) and torchvision in both directions."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from resnets import create_model

DEPTHS = [18, 34, 50, 101, 152]


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("depth", DEPTHS)
def test_torchvision_to_resnets_and_back(depth, randomize_bn):
    torch.manual_seed(depth)
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    randomize_bn(tv, seed=depth)
    ours = create_model(f"resnet{depth}", stride_in_1x1=False)
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 128, 128)
    ref = logits(tv, x)
    assert ref.shape == (2, 1000)
    assert (logits(ours, x) - ref).abs().max().item() <= 1e-5

    # Reverse: a freshly initialized resnets model into a fresh torchvision model.
    torch.manual_seed(depth + 1000)
    ours2 = create_model(f"resnet{depth}", stride_in_1x1=False)
    randomize_bn(ours2, seed=depth + 1000)
    tv2 = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    tv2.load_state_dict(ours2.state_dict(), strict=True)
    out2 = logits(ours2, x)
    assert not torch.allclose(out2, ref)  # a genuinely different network
    assert (logits(tv2, x) - out2).abs().max().item() <= 1e-5


def test_v1_layout_loads_but_computes_differently(randomize_bn):
    """The paper's v1 (stride on the 1x1) has the same shapes, but not the same function."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None)
    randomize_bn(tv, seed=0)
    v1 = create_model("resnet50")  # stride_in_1x1=True
    v1.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    assert (logits(v1, x) - logits(tv, x)).abs().max().item() > 1e-3
