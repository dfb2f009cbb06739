"""The `ResNet` class: stage shapes, feature/head split, unit variants and overrides."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnets import ResNet, count_params, create_model
from resnets.models.blocks import UNITS, BasicBlock, Bottleneck


def test_resnet50_feature_maps():
    torch.manual_seed(0)
    model = create_model("resnet50").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.feature_maps(x)
    shapes = {k: tuple(v.shape) for k, v in feats.items()}
    assert shapes == {
        "stem": (2, 64, 16, 16),  # conv1 /2, max pool /2
        "layer1": (2, 256, 16, 16),  # /4
        "layer2": (2, 512, 8, 8),  # /8
        "layer3": (2, 1024, 4, 4),  # /16
        "layer4": (2, 2048, 2, 2),  # /32
    }
    assert model.num_features == 2048


def test_resnet20_feature_maps():
    model = create_model("resnet20").eval()
    with torch.no_grad():
        feats = model.feature_maps(torch.randn(2, 3, 32, 32))
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == {
        "stem": (16, 32, 32),
        "layer1": (16, 32, 32),
        "layer2": (32, 16, 16),
        "layer3": (64, 8, 8),
    }
    assert model.stage_names == ["layer1", "layer2", "layer3"]
    assert not hasattr(model, "layer4")


@pytest.mark.parametrize(("name", "size"), [("resnet20", 32), ("resnet50", 64),
                                            ("preact_resnet110", 32)])
def test_forward_is_head_of_features(name, size):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        assert torch.equal(logits, model.forward_head(feats))
        pooled = model.forward_head(feats, pre_logits=True)
        # feature_maps' last stage includes the final BN-ReLU of pre-activation nets
        assert torch.equal(model.feature_maps(x)[model.stage_names[-1]], feats)
    assert pooled.shape == (2, model.num_features)
    torch.testing.assert_close(pooled, feats.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, model.fc(pooled))


def test_preact_net_has_bare_stem_and_final_bn_relu():
    model = create_model("preact_resnet110")
    assert isinstance(model.bn1, nn.Identity) and isinstance(model.relu, nn.Identity)
    assert isinstance(model.final_act, nn.Sequential)
    assert isinstance(model.final_act[0], nn.BatchNorm2d) and model.final_act[0].num_features == 64
    original = create_model("resnet110")
    assert isinstance(original.bn1, nn.BatchNorm2d) and isinstance(original.final_act, nn.Identity)
    assert isinstance(create_model("resnet20", unit="relu_preact").final_act, nn.ReLU)


@pytest.mark.parametrize("unit", UNITS)
def test_unit_variants_on_cifar_nets(unit):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    basic = create_model("resnet20", unit=unit)
    bottle = create_model("preact_resnet164", unit=unit)
    assert all(isinstance(b, BasicBlock) and b.unit == unit for s in basic.stages for b in s)
    assert all(isinstance(b, Bottleneck) and b.unit == unit for s in bottle.stages for b in s)
    assert basic(x).shape == (2, 10)
    assert bottle(x).shape == (2, 10)
    # 164 = 9n + 2 with n = 18; the bottleneck widens 16/32/64 to 64/128/256
    assert [len(s) for s in bottle.stages] == [18, 18, 18]
    assert bottle.num_features == 256


def test_unit_changes_the_parameter_count_only_where_bn_moves():
    # full pre-activation: BN on conv inputs (plus the final BN) instead of conv outputs.
    counts = {u: count_params(create_model("resnet20", unit=u)) for u in UNITS}
    base = counts["original"]
    assert counts["bn_after_add"] == counts["relu_before_add"] == counts["relu_preact"] == base
    # bn1 of every block sees C_in instead of C_out (2 blocks change width: -2*(32-16)-2*(64-32))
    # and the stem BN (16) is replaced by a final BN (64).
    assert counts["full_preact"] == base - 2 * (16 + 32) - 2 * 16 + 2 * 64


def test_overrides_reach_the_model():
    m = create_model("resnet20", num_classes=7)
    assert m.fc.out_features == 7 and m(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    gray = create_model("resnet18", in_chans=1)
    assert gray.conv1.in_channels == 1
    assert gray(torch.randn(2, 1, 64, 64)).shape == (2, 1000)
    c = create_model("resnet20", shortcut="C")
    assert all(isinstance(b.downsample, nn.Sequential) for s in c.stages for b in s)
    assert create_model("plain20", residual=True).layer2[0].downsample is not None


def test_zero_init_last_on_whole_net_makes_every_block_its_shortcut():
    for name, size in (("resnet20", 32), ("resnet50", 64)):
        torch.manual_seed(0)
        model = create_model(name, zero_init_last=True).eval()
        seen = []

        def check(block, inputs, output, seen=seen):
            (x,) = inputs
            s = x if block.downsample is None else block.downsample(x)
            seen.append(torch.equal(output, torch.relu(s)))

        for stage in model.stages:
            for blk in stage:
                blk.register_forward_hook(check)
        with torch.no_grad():
            model(torch.randn(2, 3, size, size))
        assert seen and all(seen), f"{name}: {seen.count(False)} blocks are not their shortcut"


def test_reset_classifier():
    model = create_model("resnet8")
    model.reset_classifier(3)
    assert model.fc.in_features == 64 and model.fc.out_features == 3


def test_he_init_fan_out():
    torch.manual_seed(0)
    model = create_model("resnet50")
    w = model.layer3[0].conv2.weight  # 256 -> 256, 3x3: fan_out = 256 * 9
    std = (2.0 / (256 * 9)) ** 0.5
    assert abs(w.std().item() / std - 1) < 0.02
    assert torch.all(model.bn1.weight == 1) and torch.all(model.bn1.bias == 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block": "wide"}, "block must be one of"),
        ({"stem": "tiny"}, "stem must be"),
        ({"shortcut": "D"}, "shortcut must be one of"),
        ({"unit": "nope"}, "unit must be one of"),
        ({"layers": (1, 1), "widths": (8,)}, "must match"),
        ({"num_classes": 0}, "must be positive"),
    ],
)
def test_invalid_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNet(**kwargs)


@pytest.mark.parametrize("residual", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("unit", UNITS)
def test_every_unit_trains_in_both_block_types(unit, block, residual):
    """Backward through each unit, residual and plain (catches in-place ops autograd rejects)."""
    torch.manual_seed(0)
    model = ResNet(block=block, layers=(1, 1), widths=(4, 8), stem="cifar", stem_width=4,
                   shortcut="B", residual=residual, unit=unit, num_classes=3)
    x = torch.randn(2, 3, 8, 8)
    out = model(x)
    assert out.shape == (2, 3)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        feats = model.eval().feature_maps(x)
    expansion = 4 if block == "bottleneck" else 1
    assert feats["layer2"].shape == (2, 8 * expansion, 4, 4)
