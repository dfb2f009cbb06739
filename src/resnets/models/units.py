"""The five residual-unit orders of 1603.05027 (Fig. 4, Table 2) and the blocks of each.

``ResNet(unit=...)`` picks a row of `UNIT_BLOCKS`. The original and the full pre-activation
units are the blocks of `resnets.models.blocks`; the three ablation orders below differ from
them only in where one BN or ReLU sits, so each subclasses the block with the same layers and
rewrites ``forward`` (and, where the last BN moves, ``zero_init_last``):

===============  ====================================  ====================  ==========
unit             residual branch                       after add             Fig. 4
===============  ====================================  ====================  ==========
original         conv-BN-ReLU ... conv-BN              ReLU                  (a)
bn_after_add     conv-BN-ReLU ... conv                 BN, ReLU              (b)
relu_before_add  conv-BN-ReLU ... conv-BN-ReLU         nothing               (c)
relu_preact      ReLU-conv-BN ... ReLU-conv-BN         nothing               (d)
full_preact      BN-ReLU-conv ... BN-ReLU-conv         nothing               (e)
===============  ====================================  ====================  ==========
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ResidualUnit,
    check_options,
)


class BNAfterAddBasicBlock(BasicBlock):
    """Fig. 4(b): the last BN moves after the addition, so ``bn2`` normalizes the sum."""

    unit = "bn_after_add"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        return self.relu(self.bn2(self.add_shortcut(out, x)))

    def zero_init_last(self) -> None:
        """The last BN is outside the branch: zero the last conv (block = ReLU(BN(shortcut)))."""
        nn.init.zeros_(self.conv2.weight)

    def response_norms(self) -> list[nn.BatchNorm2d]:
        """None: the last conv's response is not a BN output here, so (as for pre-activation)
        the net has no Fig. 7 curve rather than one with a layer missing in every unit."""
        return []


class BNAfterAddBottleneck(Bottleneck):
    """Fig. 4(b) with bottlenecks: ``bn3`` normalizes the sum."""

    unit = "bn_after_add"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.conv3(out)
        return self.relu(self.bn3(self.add_shortcut(out, x)))

    def zero_init_last(self) -> None:
        """The last BN is outside the branch: zero the last conv (block = ReLU(BN(shortcut)))."""
        nn.init.zeros_(self.conv3.weight)

    def response_norms(self) -> list[nn.BatchNorm2d]:
        """None, as for `BNAfterAddBasicBlock`."""
        return []


class ReLUBeforeAddBasicBlock(BasicBlock):
    """Fig. 4(c): the ReLU moves before the addition; the branch can then only add >= 0."""

    unit = "relu_before_add"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.add_shortcut(out, x)


class ReLUBeforeAddBottleneck(Bottleneck):
    """Fig. 4(c) with bottlenecks."""

    unit = "relu_before_add"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.relu(self.bn3(self.conv3(out)))
        return self.add_shortcut(out, x)


class ReLUPreActBasicBlock(BasicBlock):
    """Fig. 4(d): ReLU-only pre-activation, ReLU-conv-BN twice, nothing after the addition.

    ``preact`` places the leading ReLU as in `PreActBasicBlock` (default: on the branch only;
    `ResNet` passes ``"none"`` to its first unit, whose input the stem has just activated).
    """

    unit = "relu_preact"

    def __init__(self, in_ch: int, width: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, residual: bool = True,
                 preact: str = "residual"):
        super().__init__(in_ch, width, stride, downsample, residual=residual)
        check_options(preact=preact)
        self.preact = preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = x if self.preact == "none" else F.relu(x)  # not in place: x is the input
        out = self.bn1(self.conv1(pre))
        out = self.bn2(self.conv2(self.relu(out)))
        return self.add_shortcut(out, x if self.preact == "residual" else pre)


class ReLUPreActBottleneck(Bottleneck):
    """Fig. 4(d) with bottlenecks: ReLU-conv-BN three times."""

    unit = "relu_preact"

    def __init__(self, in_ch: int, width: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, residual: bool = True,
                 stride_in_1x1: bool = True, preact: str = "residual"):
        super().__init__(in_ch, width, stride, downsample, residual=residual,
                         stride_in_1x1=stride_in_1x1)
        check_options(preact=preact)
        self.preact = preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = x if self.preact == "none" else F.relu(x)  # not in place: x is the input
        out = self.bn1(self.conv1(pre))
        out = self.bn2(self.conv2(self.relu(out)))
        out = self.bn3(self.conv3(self.relu(out)))
        return self.add_shortcut(out, x if self.preact == "residual" else pre)


# unit -> block kind -> class
UNIT_BLOCKS: dict[str, dict[str, type[ResidualUnit]]] = {
    "original": {"basic": BasicBlock, "bottleneck": Bottleneck},
    "bn_after_add": {"basic": BNAfterAddBasicBlock, "bottleneck": BNAfterAddBottleneck},
    "relu_before_add": {"basic": ReLUBeforeAddBasicBlock, "bottleneck": ReLUBeforeAddBottleneck},
    "relu_preact": {"basic": ReLUPreActBasicBlock, "bottleneck": ReLUPreActBottleneck},
    "full_preact": {"basic": PreActBasicBlock, "bottleneck": PreActBottleneck},
}  # its keys are `UNITS`, the names check_options accepts (tests/models/test_blocks.py)
