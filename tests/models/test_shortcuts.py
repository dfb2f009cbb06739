"""Shortcut options A / B / C (Table 3): where projections appear and what they cost."""

from __future__ import annotations

import pytest
from torch import nn

from resnets import count_params, create_model
from resnets.models.blocks import ShortcutA


def blocks(model: nn.Module) -> list[nn.Module]:
    return [b for stage in model.stages for b in stage]


def projections(model: nn.Module) -> list[nn.Module]:
    """Blocks whose shortcut carries parameters."""
    return [
        b for b in blocks(model)
        if b.downsample is not None and any(True for _ in b.downsample.parameters())
    ]


def proj_params(in_ch: int, out_ch: int) -> int:
    return in_ch * out_ch + 2 * out_ch  # 1x1 conv without bias + BN weight and bias


@pytest.mark.parametrize(
    ("name", "expected_b", "total"),
    [
        ("resnet20", 2, 9),  # 16->32, 32->64
        ("resnet34", 3, 16),  # conv3_1, conv4_1, conv5_1
        ("resnet50", 4, 16),  # also conv2_1: 64 -> 256 at stride 1
    ],
)
def test_projection_counts(name, expected_b, total):
    a = create_model(name, shortcut="A")
    b = create_model(name, shortcut="B")
    c = create_model(name, shortcut="C")
    assert len(blocks(a)) == len(blocks(b)) == len(blocks(c)) == total
    assert projections(a) == []
    assert len(projections(b)) == expected_b
    assert len(projections(c)) == total
    # Under B the projections sit exactly where the dimensions change.
    for blk in blocks(b):
        last = blk.conv3 if hasattr(blk, "conv3") else blk.conv2
        strided = any(m.stride != (1, 1) for m in (blk.conv1, blk.conv2))
        changes = strided or blk.conv1.in_channels != last.out_channels
        assert (blk in projections(b)) == changes
    assert count_params(c) > count_params(b) > count_params(a)


def test_option_a_is_parameter_free():
    a = create_model("resnet20", shortcut="A")
    plain = create_model("plain20")
    assert count_params(a) == count_params(plain)
    shortcuts = [b.downsample for b in blocks(a) if b.downsample is not None]
    assert len(shortcuts) == 2 and all(isinstance(s, ShortcutA) for s in shortcuts)


def test_b_minus_a_is_the_projection_params_by_hand():
    a = count_params(create_model("resnet20", shortcut="A"))
    b = count_params(create_model("resnet20", shortcut="B"))
    assert b - a == proj_params(16, 32) + proj_params(32, 64) == 2752


def test_c_minus_b_on_resnet20_by_hand():
    b = count_params(create_model("resnet20", shortcut="B"))
    c = count_params(create_model("resnet20", shortcut="C"))
    # C adds a projection to each of the 7 identity shortcuts: 3 at 16ch, 2 at 32ch, 2 at 64ch.
    assert c - b == 3 * proj_params(16, 16) + 2 * proj_params(32, 32) + 2 * proj_params(64, 64)


def test_resnet34_b_minus_a_by_hand():
    a = count_params(create_model("resnet34", shortcut="A"))
    b = count_params(create_model("resnet34", shortcut="B"))
    assert b - a == proj_params(64, 128) + proj_params(128, 256) + proj_params(256, 512)


def test_projection_layout_matches_torchvision_names():
    blk = create_model("resnet50").layer2[0]
    conv, norm = blk.downsample[0], blk.downsample[1]
    assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
    assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and conv.bias is None
    assert (conv.in_channels, conv.out_channels) == (256, 512)


def test_imagenet_defaults_to_b_and_cifar_to_a():
    assert len(projections(create_model("resnet18"))) == 3
    assert projections(create_model("resnet56")) == []
