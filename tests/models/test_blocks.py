"""Blocks against hand-written references built from F.conv2d / F.batch_norm / F.relu.

Each residual-unit variant (blocks.py, units.py) is re-derived here from its table (PAPER.md
section 10) rather than from the implementation, so a misplaced BN or ReLU shows up as a
number mismatch.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnets import create_model
from resnets.models.blocks import (
    UNITS,
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ShortcutA,
    check_options,
    make_shortcut,
)
from resnets.models.units import UNIT_BLOCKS, ReLUPreActBasicBlock


def make_block(kind: str, unit: str, in_ch: int, width: int, stride: int = 1, *,
               shortcut: str = "B", residual: bool = True, **kwargs) -> nn.Module:
    """A lone block as the stage builder makes it: the shortcut first, then the block."""
    out_ch = width * (4 if kind == "bottleneck" else 1)
    downsample = make_shortcut(in_ch, out_ch, stride, shortcut) if residual else None
    return UNIT_BLOCKS[unit][kind](in_ch, width, stride, downsample, residual=residual,
                                  **kwargs)


# ---------------------------------------------------------------------------------------------
# Reference building blocks (eval mode: BN uses its running statistics).


def conv(x, layer: nn.Conv2d, stride: int, padding: int) -> torch.Tensor:
    return F.conv2d(x, layer.weight, None, stride=stride, padding=padding)


def bn(x, layer: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(
        x, layer.running_mean, layer.running_var, layer.weight, layer.bias,
        training=False, eps=layer.eps,
    )


def ref_shortcut(x, block, kind: str | None, out_ch: int, stride: int) -> torch.Tensor:
    """``kind``: None (identity), "A" (subsample + zero channels) or "proj" (1x1 conv + BN)."""
    if kind is None:
        return x
    if kind == "A":
        sub = x[:, :, ::stride, ::stride]
        zeros = sub.new_zeros(sub.shape[0], out_ch - sub.shape[1], *sub.shape[2:])
        return torch.cat([sub, zeros], dim=1)
    proj_conv, proj_bn = block.downsample[0], block.downsample[1]
    return bn(conv(x, proj_conv, stride, 0), proj_bn)


# Each reference takes the block, the conv plan [(stride, padding), ...] written from the
# block's specification, and `short(t)`: the shortcut applied to tensor t (None: plain net).


def ref_original(x, blk, plan, short):
    # conv-BN-ReLU ... conv-BN, add, ReLU
    h = x
    last = len(plan)
    for k, (s, p) in enumerate(plan, start=1):
        h = bn(conv(h, getattr(blk, f"conv{k}"), s, p), getattr(blk, f"bn{k}"))
        if k < last:
            h = F.relu(h)
    return F.relu(h if short is None else h + short(x))


def ref_bn_after_add(x, blk, plan, short):
    # conv-BN-ReLU ... conv, add, BN, ReLU (the last BN moves after the addition)
    h = x
    last = len(plan)
    for k, (s, p) in enumerate(plan, start=1):
        h = conv(h, getattr(blk, f"conv{k}"), s, p)
        if k < last:
            h = F.relu(bn(h, getattr(blk, f"bn{k}")))
    if short is not None:
        h = h + short(x)
    return F.relu(bn(h, getattr(blk, f"bn{last}")))


def ref_relu_before_add(x, blk, plan, short):
    # conv-BN-ReLU ... conv-BN-ReLU, add, nothing after
    h = x
    for k, (s, p) in enumerate(plan, start=1):
        h = F.relu(bn(conv(h, getattr(blk, f"conv{k}"), s, p), getattr(blk, f"bn{k}")))
    return h if short is None else h + short(x)


def ref_relu_preact(x, blk, plan, short):
    # ReLU-conv-BN ... ReLU-conv-BN, add, nothing after
    h = x
    for k, (s, p) in enumerate(plan, start=1):
        h = bn(conv(F.relu(h), getattr(blk, f"conv{k}"), s, p), getattr(blk, f"bn{k}"))
    return h if short is None else h + short(x)


def ref_full_preact(x, blk, plan, short, place: str):
    # BN-ReLU-conv ... BN-ReLU-conv, add, nothing after. ``place``: where BN1-ReLU goes:
    # "residual" (the shortcut takes x), "both" (the shortcut takes BN1-ReLU of x) or "none"
    # (x is already activated: no BN1-ReLU at all).
    pre = x if place == "none" else F.relu(bn(x, blk.bn1))
    h = conv(pre, blk.conv1, *plan[0])
    for k, (s, p) in enumerate(plan[1:], start=2):
        h = conv(F.relu(bn(h, getattr(blk, f"bn{k}"))), getattr(blk, f"conv{k}"), s, p)
    if short is None:
        return h
    return h + short(x if place == "residual" else pre)


# ---------------------------------------------------------------------------------------------
# Block configurations: constructor arguments, conv plan, shortcut kind, (in, out) channels.

CONFIGS = {
    "basic-identity": ("basic", (4, 4, 1), {}, [(1, 1), (1, 1)], None, 4),
    "basic-A-down": ("basic", (4, 8, 2), {"shortcut": "A"}, [(2, 1), (1, 1)], "A", 8),
    "basic-B-down": ("basic", (4, 8, 2), {"shortcut": "B"}, [(2, 1), (1, 1)], "proj", 8),
    "basic-C-same": ("basic", (4, 4, 1), {"shortcut": "C"}, [(1, 1), (1, 1)], "proj", 4),
    "bottleneck-identity": ("bottleneck", (8, 2, 1), {}, [(1, 0), (1, 1), (1, 0)], None, 8),
    "bottleneck-B-v1": (
        "bottleneck", (4, 2, 2), {"shortcut": "B", "stride_in_1x1": True},
        [(2, 0), (1, 1), (1, 0)], "proj", 8,
    ),
    "bottleneck-B-v1.5": (
        "bottleneck", (4, 2, 2), {"shortcut": "B", "stride_in_1x1": False},
        [(1, 0), (2, 1), (1, 0)], "proj", 8,
    ),
    "bottleneck-A-v1": (
        "bottleneck", (4, 2, 2), {"shortcut": "A"}, [(2, 0), (1, 1), (1, 0)], "A", 8,
    ),
}

REFERENCES = {
    "original": ref_original,
    "bn_after_add": ref_bn_after_add,
    "relu_before_add": ref_relu_before_add,
    "relu_preact": ref_relu_preact,
}


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every conv and BN (including running statistics) distinct non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
    return module


def build(config: str, unit: str, residual: bool) -> tuple[nn.Module, list, object, int]:
    block, args, kwargs, plan, kind, out_ch = CONFIGS[config]
    blk = make_block(block, unit, *args, residual=residual, **kwargs)
    randomize_(blk).eval()
    return blk, plan, (kind if residual else "none"), out_ch


@pytest.mark.parametrize("residual", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("unit", UNITS)
def test_block_matches_reference(unit, config, residual):
    blk, plan, kind, out_ch = build(config, unit, residual)
    stride = max(s for s, _ in plan)
    torch.manual_seed(1)
    x = torch.randn(2, blk.conv1.in_channels, 7, 7)
    x_before = x.clone()

    if kind == "none":
        short = None
    else:
        def short(t):
            return ref_shortcut(t, blk, kind, out_ch, stride)

    with torch.no_grad():
        got = blk(x)
        if unit == "full_preact":
            # A lone unit that changes dimensions (or projects) activates before the split.
            place = "both" if kind in ("A", "proj") else "residual"
            want = ref_full_preact(x, blk, plan, short, place)
        else:
            want = REFERENCES[unit](x, blk, plan, short)

    assert torch.equal(x, x_before), "the block modified its input in place"
    spatial = (7 + 2 - 3) // stride + 1
    assert got.shape == (2, out_ch, spatial, spatial)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("place", ["residual", "both", "none"])
@pytest.mark.parametrize("config", ["basic-identity", "basic-A-down", "bottleneck-B-v1"])
def test_full_preact_place_matches_reference(config, place):
    block, args, kwargs, plan, kind, out_ch = CONFIGS[config]
    blk = randomize_(make_block(block, "full_preact", *args, preact=place, **kwargs)).eval()
    stride = max(s for s, _ in plan)
    x = torch.randn(2, blk.conv1.in_channels, 7, 7, generator=torch.Generator().manual_seed(2))

    def short(t):
        return ref_shortcut(t, blk, kind, out_ch, stride)

    with torch.no_grad():
        got = blk(x)
        want = ref_full_preact(x, blk, plan, short, place)
        # Another place of the pre-activation (for "none": activating x first) differs.
        other = (ref_full_preact(x, blk, plan, short, "none") if place != "none"
                 else ref_full_preact(F.relu(x), blk, plan, short, "none"))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - other).abs().max() > 1e-2  # the places compute different functions
    # "none" has no BN of its own before conv1: the stem's BN-ReLU stands in for it.
    assert isinstance(blk.bn1, nn.Identity) == (place == "none")


@pytest.mark.parametrize("place", ["residual", "both", "none"])
def test_relu_preact_place(place):
    blk = randomize_(make_block("basic", "relu_preact", 4, 8, 2, shortcut="A",
                                preact=place)).eval()
    x = torch.randn(2, 4, 7, 7, generator=torch.Generator().manual_seed(3))
    pre = x if place == "none" else F.relu(x)
    with torch.no_grad():
        h = bn(conv(pre, blk.conv1, 2, 1), blk.bn1)
        h = bn(conv(F.relu(h), blk.conv2, 1, 1), blk.bn2)
        want = h + ref_shortcut(x if place == "residual" else pre, blk, "A", 8, 2)
        torch.testing.assert_close(blk(x), want, rtol=1e-5, atol=1e-5)


def test_preact_place_only_in_preact_blocks():
    with pytest.raises(TypeError, match="preact"):
        BasicBlock(4, 4, preact="none")  # the original unit has no pre-activation to place
    for cls in (PreActBasicBlock, ReLUPreActBasicBlock):
        with pytest.raises(ValueError, match="preact must be one of"):
            cls(4, 4, preact="first")


def test_every_unit_has_a_reference_and_two_blocks():
    assert set(REFERENCES) | {"full_preact"} == set(UNITS)
    assert tuple(UNIT_BLOCKS) == UNITS  # the table ResNet builds from, in the same order
    for unit, classes in UNIT_BLOCKS.items():
        assert set(classes) == {"basic", "bottleneck"}
        assert classes["basic"].unit == classes["bottleneck"].unit == unit
        assert (classes["basic"].expansion, classes["bottleneck"].expansion) == (1, 4)
        assert (classes["basic"].num_convs, classes["bottleneck"].num_convs) == (2, 3)
    # The ablation orders reuse the layers of the original blocks (same state dicts).
    assert all(issubclass(UNIT_BLOCKS[u]["basic"], BasicBlock) for u in UNITS[:4])
    assert all(issubclass(UNIT_BLOCKS[u]["bottleneck"], Bottleneck) for u in UNITS[:4])


def test_units_compute_different_functions():
    """Same weights, five units: five different outputs (BN/ReLU placement matters)."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6)
    template = randomize_(BasicBlock(4, 4))
    outs = {}
    for unit in UNITS:
        blk = UNIT_BLOCKS[unit]["basic"](4, 4)
        # With in == width every BN has 4 channels, so the same state dict fits all units.
        blk.load_state_dict(template.state_dict())
        with torch.no_grad():
            outs[unit] = blk.eval()(x)
    for a, b in itertools.combinations(UNITS, 2):
        assert (outs[a] - outs[b]).abs().max() > 1e-3, f"{a} and {b} give the same output"


def test_bn_channels_follow_the_unit():
    # Pre-activation normalizes each conv's input; the other units normalize its output.
    post = Bottleneck(8, 2)
    pre = PreActBottleneck(8, 2)
    assert [post.bn1.num_features, post.bn2.num_features, post.bn3.num_features] == [2, 2, 8]
    assert [pre.bn1.num_features, pre.bn2.num_features, pre.bn3.num_features] == [8, 2, 2]
    assert Bottleneck.expansion == 4 and BasicBlock.expansion == 1


def test_unknown_unit_and_shortcut_are_refused():
    with pytest.raises(ValueError, match="unit must be one of"):
        check_options(unit="postact")
    with pytest.raises(ValueError, match="shortcut must be one of"):
        make_shortcut(4, 8, 2, "D")
    check_options(block="basic", stem="cifar", shortcut="C", unit="full_preact", preact="both")


def test_plain_nets_have_no_shortcut_modules():
    net = create_model("plain20", shortcut="C")
    assert all(b.downsample is None and not b.residual for s in net.stages for b in s)
    # A plain block adds nothing: its output is its branch, then the ReLU of the original unit.
    with pytest.raises(ValueError, match="plain block"):
        BasicBlock(4, 8, 2, make_shortcut(4, 8, 2, "B"), residual=False)
    blk = randomize_(BasicBlock(4, 8, 2, residual=False)).eval()
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        want = F.relu(bn(conv(F.relu(bn(conv(x, blk.conv1, 2, 1), blk.bn1)), blk.conv2, 1, 1),
                         blk.bn2))
        torch.testing.assert_close(blk(x), want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# zero_init_last: the residual branch starts at zero, so the block starts as its shortcut.

ZERO_INIT_CASES = {
    "basic-identity": ("basic", (8, 8, 1), {}),
    "basic-B-down": ("basic", (8, 16, 2), {"shortcut": "B"}),
    "basic-A-down": ("basic", (8, 16, 2), {"shortcut": "A"}),
    "bottleneck-identity": ("bottleneck", (16, 4, 1), {}),
    "bottleneck-B-down": ("bottleneck", (8, 4, 2), {"shortcut": "B"}),
    "bottleneck-A-down": ("bottleneck", (8, 4, 2), {"shortcut": "A"}),
}


def _fresh(case: str, unit: str) -> nn.Module:
    block, args, kwargs = ZERO_INIT_CASES[case]
    torch.manual_seed(0)
    blk = make_block(block, unit, *args, **kwargs)
    blk.zero_init_last()
    return blk


def _shortcut(blk: nn.Module, t: torch.Tensor) -> torch.Tensor:
    return t if blk.downsample is None else blk.downsample(t)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", list(ZERO_INIT_CASES))
def test_zero_init_original_starts_as_relu_of_shortcut(case, train):
    blk = _fresh(case, "original").train(train)
    x = torch.randn(2, blk.conv1.in_channels, 8, 8)
    with torch.no_grad():
        want = F.relu(_shortcut(blk, x))
        got = blk(x)
    assert torch.equal(got, want)


@pytest.mark.parametrize("case", list(ZERO_INIT_CASES))
def test_zero_init_full_preact_starts_as_shortcut(case):
    blk = _fresh(case, "full_preact").eval()
    x = torch.randn(2, blk.conv1.in_channels, 8, 8)
    with torch.no_grad():
        got = blk(x)
        if blk.downsample is not None:
            want = blk.downsample(F.relu(blk.bn1(x)))  # shortcut of the pre-activated input
        else:
            want = _shortcut(blk, x)
    assert torch.equal(got, want)
    if blk.downsample is None:
        assert torch.equal(got, x)  # an identity block is exactly the identity


@pytest.mark.parametrize("unit", ["relu_before_add", "relu_preact", "bn_after_add"])
def test_zero_init_other_units(unit):
    blk = _fresh("basic-A-down", unit).eval()
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        got = blk(x)
        s = _shortcut(blk, x)
        want = F.relu(blk.bn2(s)) if unit == "bn_after_add" else s
    assert torch.equal(got, want)


def test_zero_init_touches_only_the_last_layer():
    blk = BasicBlock(8, 8)
    blk.zero_init_last()
    assert torch.count_nonzero(blk.bn2.weight) == 0
    assert torch.all(blk.bn1.weight == 1)
    pre = PreActBasicBlock(8, 8)
    pre.zero_init_last()
    assert torch.count_nonzero(pre.conv2.weight) == 0
    assert torch.count_nonzero(pre.conv1.weight) > 0


# ---------------------------------------------------------------------------------------------
# Option A on a known tensor.


def test_shortcut_a_subsamples_and_zero_pads():
    x = torch.arange(2 * 16 * 6 * 6, dtype=torch.float32).reshape(2, 16, 6, 6)
    s = ShortcutA(16, 32, 2)
    out = s(x)
    assert out.shape == (2, 32, 3, 3)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert torch.equal(out[:, 16:], torch.zeros(2, 16, 3, 3))
    # Spot-check one value by hand: channel 5, output (1, 2) is input (2, 4) of image 1.
    assert out[1, 5, 1, 2].item() == (1 * 16 * 36) + 5 * 36 + 2 * 6 + 4
    assert sum(p.numel() for p in s.parameters()) == 0


def test_shortcut_a_odd_size_and_no_padding():
    x = torch.randn(1, 4, 7, 7)
    assert torch.equal(ShortcutA(4, 4, 2)(x), x[:, :, ::2, ::2])  # (1, 4, 4, 4)
    assert torch.equal(ShortcutA(4, 6, 1)(x)[:, :4], x)
    with pytest.raises(ValueError, match="cannot reduce channels"):
        ShortcutA(8, 4, 1)


@pytest.mark.parametrize("unit", UNITS)
def test_response_norms_are_the_bns_right_after_a_3x3_conv(unit):
    """Fig. 7 (analysis/responses.py) reads these: a BN whose input is a 3x3 conv's output."""
    basic, bottle = UNIT_BLOCKS[unit]["basic"](4, 4), UNIT_BLOCKS[unit]["bottleneck"](8, 2)
    if unit in ("bn_after_add", "full_preact"):  # no unit-wide curve: the last BN is elsewhere
        assert basic.response_norms() == bottle.response_norms() == []
    else:
        assert basic.response_norms() == [basic.bn1, basic.bn2]
        assert bottle.response_norms() == [bottle.bn2]
