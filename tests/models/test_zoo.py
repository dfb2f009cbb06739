"""Every registered network: forward/backward on the CPU, depth, and the paper's sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import resnets
from resnets import count_params, create_model, list_models, model_info
from resnets.models import Bottleneck, PreActBottleneck, ShortcutA

# ImageNet nets are fully convolutional up to the adaptive pool, so 64x64 exercises every layer
# (layer4 sees 2x2) at a fraction of the 224x224 cost.
SMALL_INPUT = {"cifar": 32, "imagenet": 64}


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    info = model_info(name)
    torch.manual_seed(0)
    model = create_model(name).train()
    size = SMALL_INPUT[info.family]
    x = torch.randn(2, info.input_size[0], size, size)
    out = model(x)
    num_classes = model.fc.out_features
    assert num_classes == (10 if info.family == "cifar" else 1000)
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


def _paper_depth(model: nn.Module) -> int:
    """Weighted layers on the main path: convs outside the shortcut, plus the fc."""
    shortcut_convs = {
        id(m) for blk in model.modules() if isinstance(getattr(blk, "downsample", None), nn.Module)
        for m in blk.downsample.modules()
    }
    convs = sum(
        1 for m in model.modules() if isinstance(m, nn.Conv2d) and id(m) not in shortcut_convs
    )
    return convs + sum(1 for m in model.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("name", list_models())
def test_depth_matches_name(name):
    info = model_info(name)
    # The depth ends the name; the option-A ImageNet nets of Table 2 add "_a".
    assert name.removesuffix("_a").endswith(str(info.depth))
    assert _paper_depth(create_model(name)) == info.depth


def _cifar_basic_params(n: int, classes: int = 10) -> int:
    """Closed-form parameter count of a CIFAR basic net with option A (Sec. 4.2)."""
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    prev = 16
    for w in (16, 32, 64):
        total += prev * w * 9 + w * w * 9 + 2 * 2 * w  # first block: two convs, two BNs
        total += (n - 1) * (2 * w * w * 9 + 2 * 2 * w)
        prev = w
    return total + 64 * classes + classes  # fc


# depth -> the parameter count as Table 6 prints it (in millions)
CIFAR_PAPER_PARAMS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}


@pytest.mark.parametrize("depth", list(CIFAR_PAPER_PARAMS))
def test_cifar_params_match_table6(depth):
    p = count_params(create_model(f"resnet{depth}"))
    printed = CIFAR_PAPER_PARAMS[depth]
    decimals = 2 if printed < 1 else 1
    assert round(p / 1e6, decimals) == printed
    assert p == _cifar_basic_params((depth - 2) // 6)


def test_closed_form_is_exact_for_resnet20():
    assert _cifar_basic_params(3) == 269_722


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_twin_has_identical_params(depth):
    res, plain = create_model(f"resnet{depth}"), create_model(f"plain{depth}")
    assert count_params(plain) == count_params(res) == _cifar_basic_params((depth - 2) // 6)
    # Same layers, same names and shapes: the state dicts are interchangeable.
    assert {k: v.shape for k, v in res.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }


IMAGENET_PARAMS = {
    18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808,
}


@pytest.mark.parametrize("depth", list(IMAGENET_PARAMS))
def test_imagenet_params_exact(depth):
    model = create_model(f"resnet{depth}")
    assert count_params(model) == IMAGENET_PARAMS[depth]
    # Table 1 rounds to 0.1M.
    assert math.isclose(round(IMAGENET_PARAMS[depth] / 1e6, 1),
                        {18: 11.7, 34: 21.8, 50: 25.6, 101: 44.5, 152: 60.2}[depth])


def test_plain_imagenet_equals_option_a():
    for depth in (18, 34):
        plain = count_params(create_model(f"plain{depth}"))
        assert plain == count_params(create_model(f"resnet{depth}", shortcut="A"))


def test_tiny_model_exists_for_fast_tests():
    assert "resnet8" in resnets.list_models("cifar")
    assert count_params(create_model("resnet8")) == _cifar_basic_params(1)


def test_option_a_imagenet_nets_of_table2():
    """resnet18_a / resnet34_a: Table 2's ResNets, option A, no extra parameters."""
    for depth, plain_count in ((18, 11_515_688), (34, 21_623_848)):
        a = create_model(f"resnet{depth}_a")
        assert count_params(a) == count_params(create_model(f"plain{depth}")) == plain_count
        # option B's projections (+BN) are the whole difference to resnetNN
        assert count_params(create_model(f"resnet{depth}")) - plain_count == {
            18: 173_824, 34: 173_824}[depth]
        downsamples = [b.downsample for s in a.stages for b in s if b.downsample is not None]
        assert len(downsamples) == 3 and all(isinstance(d, ShortcutA) for d in downsamples)
        info = model_info(f"resnet{depth}_a")
        assert (info.family, info.depth) == ("imagenet", depth)
        assert "option A" in info.description
    # Same layers and names as the plain twin: their state dicts are interchangeable.
    a, plain = create_model("resnet34_a"), create_model("plain34")
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in plain.state_dict().items()}
    x = torch.randn(1, 3, 64, 64)
    a.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert not torch.allclose(a.eval()(x), plain.eval()(x))  # but the shortcuts add


# 1603.05027 section 4.2 / Table 2-3: ResNet-164 1.7M, ResNet-1001 10.2M parameters.
BOTTLENECK_PARAMS = {164: (1_704_154, 1.7), 1001: (10_328_602, 10.2)}


@pytest.mark.parametrize("depth", list(BOTTLENECK_PARAMS))
def test_cifar_bottleneck_nets_params(depth):
    exact, paper = BOTTLENECK_PARAMS[depth]
    for name in (f"resnet{depth}", f"preact_resnet{depth}"):
        model = create_model(name)
        assert count_params(model) == exact, name
        # The paper rounds to 0.1M; ours is 10.33M for 1001 (projection BNs and fc included).
        assert abs(exact / 1e6 - paper) < 0.15
        want = PreActBottleneck if name.startswith("preact") else Bottleneck
        assert all(type(b) is want for s in model.stages for b in s)
        assert [len(s) for s in model.stages] == [(depth - 2) // 9] * 3
        assert model.num_features == 256
    assert create_model(f"resnet{depth}").layer1[0].unit == "original"


@pytest.mark.parametrize("depth", [110, 164])
def test_all_five_unit_orders_exist(depth):
    """1603.05027 Table 2 compares five unit orders at ResNet-110 and ResNet-164."""
    from resnets.models import UNITS

    x = torch.randn(2, 3, 32, 32)
    for unit in UNITS:
        model = create_model(f"resnet{depth}", unit=unit).eval()
        assert all(b.unit == unit for s in model.stages for b in s)
        assert _paper_depth(model) == depth
        with torch.no_grad():
            assert model(x).shape == (2, 10)
    # The registered pre-activation net is the full_preact unit order of the same net.
    same = create_model(f"resnet{depth}", unit="full_preact").state_dict()
    preact = create_model(f"preact_resnet{depth}").state_dict()
    assert {k: v.shape for k, v in same.items()} == {k: v.shape for k, v in preact.items()}
