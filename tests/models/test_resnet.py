"""The `ResNet` class: stage shapes, feature/head split, unit variants and overrides."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnets import ResNet, count_params, create_model
from resnets.models.blocks import UNITS, ShortcutA
from resnets.models.units import UNIT_BLOCKS


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


# ---------------------------------------------------------------------------------------------
# Pre-activation nets against a hand-written module of the public code's layout: the final
# fb.resnet.torch preresnet.lua (ImageNet: conv-BN-ReLU-maxpool stem, the first unit without
# pre-activation; CIFAR: a bare conv stem whose first unit activates before the split) and
# KaimingHe/resnet-1k-layers (bare conv stem; every widening unit activates before the split).


class RefUnit(nn.Module):
    """One unit as the Torch code writes it. ``kind``: "no_preact" (no BN-ReLU), "both_preact"
    (BN-ReLU before the split: both paths see it) or "preact" (BN-ReLU on the branch only)."""

    def __init__(self, cin: int, width: int, stride: int, bottleneck: bool, kind: str,
                 shortcut: str):
        super().__init__()
        cout = 4 * width if bottleneck else width
        self.kind, self.stride, self.extra = kind, stride, 0
        self.pre_bn = None if kind == "no_preact" else nn.BatchNorm2d(cin)
        if bottleneck:  # stride on the first 1x1, as in both releases
            shapes = [(cin, width, 1, stride), (width, width, 3, 1), (width, cout, 1, 1)]
        else:
            shapes = [(cin, width, 3, stride), (width, cout, 3, 1)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, st, k // 2, bias=False)
                                   for i, o, k, st in shapes)
        self.inner_bns = nn.ModuleList(nn.BatchNorm2d(i) for i, _, _, _ in shapes[1:])
        self.proj = None
        if shortcut == "C" or (shortcut == "B" and cin != cout):
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))
        elif cin != cout:
            self.extra = cout - cin  # 1x1 average pool with stride, then zero channels after

    def shortcut(self, t: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            return self.proj(t)
        if self.extra:
            t = t[:, :, ::self.stride, ::self.stride]
            return torch.cat([t, torch.zeros_like(t[:, :1]).expand(-1, self.extra, -1, -1)], 1)
        return t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "both_preact":
            x = torch.relu(self.pre_bn(x))
        h = torch.relu(self.pre_bn(x)) if self.kind == "preact" else x
        h = self.convs[0](h)
        for bn, conv in zip(self.inner_bns, self.convs[1:], strict=True):
            h = conv(torch.relu(bn(h)))
        return h + self.shortcut(x)


class RefPreActNet(nn.Module):
    def __init__(self, *, imagenet: bool, bottleneck: bool, layers, widths, shortcut: str,
                 stem_width: int, num_classes: int):
        super().__init__()
        if imagenet:
            self.conv1 = nn.Conv2d(3, stem_width, 7, 2, 3, bias=False)
            self.stem = nn.Sequential(nn.BatchNorm2d(stem_width), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
        else:
            self.conv1 = nn.Conv2d(3, stem_width, 3, 1, 1, bias=False)
            self.stem = nn.Sequential()  # a bare conv
        units, cin = [], stem_width
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            for j in range(n):
                kind = "preact" if j else ("no_preact" if imagenet and i == 0 else "both_preact")
                units.append(RefUnit(cin, w, 2 if i and not j else 1, bottleneck, kind,
                                     shortcut))
                cin = 4 * w if bottleneck else w
        self.units = nn.Sequential(*units)
        self.final_bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.units(self.stem(self.conv1(x)))
        return self.fc(torch.relu(self.final_bn(h)).mean(dim=(2, 3)))

    def copy_from(self, model: ResNet, imagenet: bool) -> None:
        """Our tensors into the reference's places (each one used exactly once)."""
        self.conv1.load_state_dict(model.conv1.state_dict())
        # Our stem BN is the ImageNet stem's BN, or the CIFAR first unit's common BN.
        stem_bn = self.stem[0] if imagenet else self.units[0].pre_bn
        stem_bn.load_state_dict(model.bn1.state_dict())
        blocks = [b for s in model.stages for b in s]
        assert len(blocks) == len(self.units)
        for k, (ref, blk) in enumerate(zip(self.units, blocks, strict=True)):
            if k:
                ref.pre_bn.load_state_dict(blk.bn1.state_dict())
            for i, conv in enumerate(ref.convs, start=1):
                conv.load_state_dict(getattr(blk, f"conv{i}").state_dict())
            for i, bn in enumerate(ref.inner_bns, start=2):
                bn.load_state_dict(getattr(blk, f"bn{i}").state_dict())
            if ref.proj is not None:
                ref.proj.load_state_dict(blk.downsample.state_dict())
            else:
                assert blk.downsample is None or isinstance(blk.downsample, ShortcutA)
        self.final_bn.load_state_dict(model.final_act[0].state_dict())
        self.fc.load_state_dict(model.fc.state_dict())


PREACT_CASES = {  # name, overrides, input size
    "preact_resnet110": ("preact_resnet110", {}, 32),
    "preact_resnet164": ("preact_resnet164", {}, 32),
    "cifar20-full_preact": ("resnet20", {"unit": "full_preact"}, 32),
    "cifar20-full_preact-B": ("resnet20", {"unit": "full_preact", "shortcut": "B"}, 32),
    "preact_resnet18": ("preact_resnet18", {}, 64),
    "preact_resnet18-A": ("preact_resnet18", {"shortcut": "A"}, 64),
    "preact_resnet18-C": ("preact_resnet18", {"shortcut": "C"}, 64),
    "preact_resnet50": ("preact_resnet50", {}, 64),
}


@pytest.mark.parametrize("case", list(PREACT_CASES))
def test_preact_net_matches_the_release_layout(case, randomize_bn):
    name, overrides, size = PREACT_CASES[case]
    torch.manual_seed(0)
    model = randomize_bn(create_model(name, **overrides), seed=1).eval()
    imagenet = size == 64
    ref = RefPreActNet(
        imagenet=imagenet, bottleneck=model.layer1[0].expansion == 4,
        layers=[len(s) for s in model.stages], widths=[s[0].conv1.out_channels for s in
                                                       model.stages],
        shortcut=overrides.get("shortcut", "A" if name.startswith("resnet20") or
                               name == "preact_resnet110" else "B"),
        stem_width=model.conv1.out_channels, num_classes=model.fc.out_features).eval()
    ref.copy_from(model, imagenet)
    # Every tensor of ours went somewhere, and the reference has no tensor we lack.
    assert count_params(ref) == count_params(model)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got, want = model(x), ref(x)
    assert got.shape == want.shape == (2, model.fc.out_features)
    assert want.abs().max() > 0.1  # not a degenerate comparison
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["preact_resnet110", "preact_resnet18"])
def test_preact_first_unit_sees_the_activated_stem(name):
    """1603.05027 appendix: the first activation comes right after conv1, before the split."""
    model = create_model(name).eval()
    assert isinstance(model.bn1, nn.BatchNorm2d) and isinstance(model.relu, nn.ReLU)
    first = model.layer1[0]
    assert first.preact == "none" and isinstance(first.bn1, nn.Identity)
    assert [s[0].preact for s in model.stages[1:]] == ["both"] * (len(model.stages) - 1)
    assert all(b.preact == "residual" for s in model.stages for b in list(s)[1:])
    seen = []
    first.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        x = torch.randn(2, 3, 32 if "110" in name else 64, 64 if "18" in name else 32)
        model(x)
    assert seen and seen[0].min() >= 0 and seen[0].max() > 0  # after a ReLU
    assert isinstance(model.final_act, nn.Sequential)
    assert isinstance(model.final_act[0], nn.BatchNorm2d)
    assert model.final_act[0].num_features == model.num_features


def test_relu_preact_first_unit(randomize_bn):
    """ReLU-only pre-activation: the stem's conv-BN-ReLU is the first activation, so the
    first unit's own ReLU would be a no-op; later units keep theirs on the branch only."""
    model = randomize_bn(create_model("resnet20", unit="relu_preact"), seed=4).eval()
    assert isinstance(model.bn1, nn.BatchNorm2d) and isinstance(model.final_act, nn.ReLU)
    assert model.layer1[0].preact == "none"
    assert all(b.preact == "residual" for s in model.stages for b in s if b is not
               model.layer1[0])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = model(x)
        model.layer1[0].preact = "both"  # ReLU of a ReLU output: the same net
        torch.testing.assert_close(model(x), got, rtol=0, atol=0)


def test_non_preact_nets_keep_a_post_activation_stem():
    original = create_model("resnet110")
    assert isinstance(original.bn1, nn.BatchNorm2d) and isinstance(original.final_act, nn.Identity)
    # The original unit has no pre-activation to place.
    assert not any(hasattr(b, "preact") for s in original.stages for b in s)


def test_zero_init_last_refused_for_plain_nets():
    from resnets.errors import UserError

    for name in ("plain20", "plain34"):
        with pytest.raises(UserError, match="residual=False.*Drop zero_init_last"):
            create_model(name, zero_init_last=True)
    with pytest.raises(UserError, match="constant|same logits"):
        create_model("resnet20", residual=False, zero_init_last=True)
    assert create_model("resnet20", zero_init_last=True) is not None  # residual: fine


@pytest.mark.parametrize("unit", UNITS)
def test_unit_variants_on_cifar_nets(unit):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    basic = create_model("resnet20", unit=unit)
    bottle = create_model("preact_resnet164", unit=unit)
    basic_cls, bottle_cls = UNIT_BLOCKS[unit]["basic"], UNIT_BLOCKS[unit]["bottleneck"]
    assert all(type(b) is basic_cls and b.unit == unit for s in basic.stages for b in s)
    assert all(type(b) is bottle_cls and b.unit == unit for s in bottle.stages for b in s)
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


def test_preact_bottleneck_state_dicts_of_the_bare_stem_layout_still_load(randomize_bn):
    """preact_resnet164/1001 state dicts written when the first unit's BN was layer1.0.bn1
    (bare conv stem) load into the conv-BN-ReLU stem: the same function, renamed."""
    torch.manual_seed(0)
    model = randomize_bn(create_model("preact_resnet164", layers=(2, 2, 2)), seed=5).eval()
    old = {("layer1.0.bn1." + k[4:] if k.startswith("bn1.") else k): v
           for k, v in model.state_dict().items()}
    assert "bn1.weight" not in old and "layer1.0.bn1.weight" in old
    fresh = create_model("preact_resnet164", layers=(2, 2, 2)).eval()
    fresh.load_state_dict(old)  # strict
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    # A basic net's first unit had an identity shortcut that saw the raw stem: refused.
    basic = create_model("resnet20", unit="full_preact")
    old = {("layer1.0.bn1." + k[4:] if k.startswith("bn1.") else k): v
           for k, v in basic.state_dict().items()}
    with pytest.raises(RuntimeError, match="layer1.0.bn1"):
        create_model("resnet20", unit="full_preact").load_state_dict(old)
