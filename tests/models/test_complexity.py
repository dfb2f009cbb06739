"""Multiply-add and parameter counters against the paper's Table 1 and Sec. 4.2."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnets import count_macs, count_params, create_model

PAPER_GMACS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}


@pytest.mark.parametrize("depth", list(PAPER_GMACS))
def test_imagenet_macs_within_5_percent_of_table1(depth):
    macs = count_macs(create_model(f"resnet{depth}"), (3, 224, 224))
    assert abs(macs / 1e9 - PAPER_GMACS[depth]) / PAPER_GMACS[depth] < 0.05


def test_cifar_resnet20_macs():
    macs = count_macs(create_model("resnet20"), (3, 32, 32))
    assert 40e6 <= macs <= 42e6


def test_v15_costs_more_with_the_same_params():
    v1 = create_model("resnet50")  # the paper's default: stride on the first 1x1
    v15 = create_model("resnet50", stride_in_1x1=False)
    assert count_params(v15) == count_params(v1)
    assert count_macs(v15, (3, 224, 224)) > count_macs(v1, (3, 224, 224))


def test_macs_by_hand_on_a_single_conv_and_fc():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 5),
    )
    # conv: 8 outputs x 10x10 positions x 3x3x3 taps; fc: 8 x 5
    assert count_macs(model, (3, 10, 10)) == 8 * 100 * 27 + 8 * 5


def test_count_macs_keeps_training_mode():
    model = create_model("resnet8").train()
    count_macs(model, (3, 32, 32))
    assert model.training
    model.eval()
    count_macs(model, (3, 32, 32))
    assert not model.training


def test_count_params_trainable_only():
    model = create_model("resnet8")
    total = count_params(model)
    model.fc.weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == total - 64 * 10
    assert count_params(model) == total
    assert total == sum(p.numel() for p in model.parameters())
    assert isinstance(total, int) and not isinstance(total, torch.Tensor)
