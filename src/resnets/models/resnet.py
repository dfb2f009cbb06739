"""One `ResNet` class for every network of the paper: ImageNet and CIFAR, residual and plain.

Layout (PAPER.md sections 3-4): stem -> ``layer1..layerK`` -> global average pool -> ``fc``.
The first block of every stage after the first downsamples with stride 2. Attribute names
match torchvision (``conv1``, ``bn1``, ``maxpool``, ``layer1``..``layer4``, ``fc``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ..errors import UserError
from .blocks import ResidualUnit, check_options, make_shortcut
from .units import UNIT_BLOCKS

Stem = Literal["imagenet", "cifar"]
INIT_MODES = ("fan_out", "fan_in")  # see ResNet's init_mode


def _preact_place(unit: str, *, first_stage: bool, first_block: bool) -> str | None:
    """Where a block's own pre-activation goes (see `resnets.models.blocks`); ``None`` for
    units without one."""
    if unit not in ("full_preact", "relu_preact"):
        return None
    if first_stage and first_block:
        return "none"  # the stem's BN-ReLU (ReLU) already activated the input
    if unit == "full_preact" and first_block:
        # Both paths see the activated input, whatever the shortcut option: fb.resnet.torch's
        # "both_preact" and the common BN-ReLU of resnet-1k-layers' widening units.
        return "both"
    return "residual"


def _rename_first_unit_bn(module, state_dict, prefix, *args) -> None:
    """Load state dicts of full pre-activation CIFAR nets with option B written before the
    stem held the first unit's BN (there it was ``layer1.0.bn1``, shared by both paths since
    that unit projects). For these nets the old and new layouts compute the same function;
    for others the keys stay unmatched and loading reports them."""
    old, new = f"{prefix}layer1.0.bn1.", f"{prefix}bn1."
    if f"{new}weight" in state_dict or f"{old}weight" not in state_dict:
        return
    if f"{prefix}layer1.0.downsample.0.weight" not in state_dict:
        return  # its first unit had an identity shortcut: not the same function
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[new + key[len(old):]] = state_dict.pop(key)


class ResNet(nn.Module):
    """A residual (or plain) network.

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` or ``(3, 3, 3)`` for CIFAR resnet20.
        widths: base width of each stage (bottleneck outputs are 4x).
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool) or ``"cifar"`` (3x3 conv, 16 filters).
        stem_width: output channels of the stem conv.
        shortcut: option ``"A"``, ``"B"`` or ``"C"`` of the paper's Table 3.
        residual: ``False`` builds the plain counterpart (no shortcuts at all).
        unit: residual-unit order of 1603.05027 Fig. 4; :mod:`resnets.models.units` maps it
            (with ``block``) to a block class.
        stride_in_1x1: bottleneck stride on the 1x1 (paper, "v1") or the 3x3 (torchvision, "v1.5").
        num_classes: size of the final fc layer.
        in_chans: input image channels.
        zero_init_last: start every residual branch at zero (a common recipe tweak; off in
            the paper). Residual nets only: a plain net would output a constant.
        init_mode: how every conv's He (Kaiming) normal init counts its connections, with the
            ReLU gain: ``"fan_out"`` (default), std sqrt(2 / (k*k*out_channels)), the choice of
            the authors' Torch lineage (fb.resnet.torch) and of torchvision, kept so that
            runs match theirs; ``"fan_in"``, std sqrt(2 / (k*k*in_channels)), the variance
            2/n_l with n_l inputs per unit that He et al. (2015) derive and the notes on the
            paper quote. Both keep signals stable (forward for fan-in, backward for
            fan-out); they differ only where a conv changes the width (the first conv of a
            stage, bottleneck 1x1s).

    Pre-activation nets (``unit="full_preact"`` or ``"relu_preact"``) follow the appendix of
    1603.05027 and its public code (see `resnets.models.blocks`) at both ends: the stem is
    conv-BN-ReLU (then max pool for ImageNet) and is the "first activation right after
    conv1, before splitting into two paths", so ``layer1[0]`` has no pre-activation of its
    own and its shortcut sees the activated stem output; with ``full_preact`` the first unit
    of every later stage activates before the split (both paths see it); a final BN-ReLU
    (ReLU for ``relu_preact``) follows the last addition.
    """

    def __init__(
        self,
        *,
        block: str = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: Stem = "imagenet",
        stem_width: int = 64,
        shortcut: str = "B",
        residual: bool = True,
        unit: str = "original",
        stride_in_1x1: bool = True,
        num_classes: int = 1000,
        in_chans: int = 3,
        zero_init_last: bool = False,
        init_mode: str = "fan_out",
    ):
        super().__init__()
        check_options(block=block, stem=stem, shortcut=shortcut, unit=unit)
        if init_mode not in INIT_MODES:
            raise UserError(f"unknown init_mode {init_mode!r}: use {' or '.join(INIT_MODES)} "
                            f"(He normal init counting a conv's outputs or its inputs).")
        if len(layers) != len(widths) or not layers:
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} must match")
        if num_classes < 1 or in_chans < 1:
            raise ValueError("num_classes and in_chans must be positive")
        if zero_init_last and not residual:
            raise UserError(
                "zero_init_last=True zeroes the last BN (or conv) of every block; without "
                "shortcuts (residual=False) nothing else carries the signal, so the net would "
                "output the same logits for every input. Drop zero_init_last for plain nets, "
                "or build the residual net (residual=True).")
        block_cls = UNIT_BLOCKS[unit][block]
        self.unit = unit
        preact = unit == "full_preact"

        # Stem: conv-BN-ReLU for every unit. For full_preact this BN-ReLU is the first unit's
        # pre-activation, moved before the split (and, for ImageNet, before the max pool, where
        # fb.resnet.torch's preresnet.lua has it). relu_preact needs nothing else: its units'
        # pre-activation is a ReLU alone, which the stem ends with, and its convs are followed
        # by BN as the stem's is; so its first unit only skips a ReLU that would be a no-op.
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem_width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()

        # Only bottlenecks have a 1x1 that can carry the stride.
        block_kwargs = {"stride_in_1x1": stride_in_1x1} if block == "bottleneck" else {}
        in_ch = stem_width
        self.stage_names: list[str] = []
        for i, (n, width) in enumerate(zip(layers, widths, strict=True)):
            name = f"layer{i + 1}"
            stage = self._make_layer(block_cls, in_ch, width, n, stride=1 if i == 0 else 2,
                                     shortcut=shortcut, residual=residual, first_stage=i == 0,
                                     **block_kwargs)
            setattr(self, name, stage)
            self.stage_names.append(name)
            in_ch = width * block_cls.expansion
        self.num_features = in_ch
        # Units whose output is not activated get the missing BN/ReLU once, before pooling.
        if preact:
            self.final_act = nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True))
        elif unit == "relu_preact":
            self.final_act = nn.ReLU(inplace=True)
        else:
            self.final_act = nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights(zero_init_last, init_mode)
        if preact and stem == "cifar" and shortcut == "B":
            self.register_load_state_dict_pre_hook(_rename_first_unit_bn)

    def _make_layer(self, block_cls: type[ResidualUnit], in_ch: int, width: int, blocks: int,
                    stride: int, *, shortcut: str, residual: bool, first_stage: bool,
                    **block_kwargs) -> nn.Sequential:
        """One stage: ``blocks`` blocks, the first with ``stride`` and a new width. Each
        block's shortcut is made here (plain nets have none) and handed to the block."""
        layers = []
        for j in range(blocks):
            s = stride if j == 0 else 1
            out_ch = width * block_cls.expansion
            downsample = make_shortcut(in_ch, out_ch, s, shortcut) if residual else None
            place = _preact_place(self.unit, first_stage=first_stage, first_block=j == 0)
            extra = {} if place is None else {"preact": place}
            layers.append(block_cls(in_ch, width, s, downsample, residual=residual,
                                    **block_kwargs, **extra))
            in_ch = out_ch
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_last: bool, init_mode: str) -> None:
        # He et al. (2015) init with ReLU gain (fan-out by default, see init_mode); BN starts
        # at identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=init_mode, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, ResidualUnit):
                    m.zero_init_last()

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, name) for name in self.stage_names]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-stage feature maps ``{"stem": ..., "layer1": ..., ...}`` for backbones.

        The last stage's map includes the final pre-activation BN/ReLU where the unit has one.
        """
        feats = {"stem": (x := self.forward_stem(x))}
        for name, stage in zip(self.stage_names, self.stages, strict=True):
            x = stage(x)
            feats[name] = x
        feats[self.stage_names[-1]] = self.final_act(x)
        return feats

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, F, h, w)
        x = self.forward_stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.final_act(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (B, F)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the fc layer (for fine-tuning on a new label set)."""
        self.fc = nn.Linear(self.num_features, num_classes)
