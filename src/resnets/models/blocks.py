"""Building blocks of He et al. (CVPR 2016) and the full pre-activation unit of He et al.
(ECCV 2016, arXiv 1603.05027), each with its own straight-line ``forward``:

================  =====================================================  ==========
block             residual branch                                        after add
================  =====================================================  ==========
BasicBlock        conv3-BN-ReLU-conv3-BN                                 ReLU
Bottleneck        conv1-BN-ReLU-conv3-BN-ReLU-conv1-BN                   ReLU
PreActBasicBlock  BN-ReLU-conv3-BN-ReLU-conv3                            nothing
PreActBottleneck  BN-ReLU-conv1-BN-ReLU-conv3-BN-ReLU-conv1              nothing
================  =====================================================  ==========

The three other unit orders of 1603.05027's ablation (Fig. 4 b-d) live in
`resnets.models.units`, which also maps each ``unit`` name to its two block classes.

A block is given its shortcut: ``downsample`` is the module on the identity path (``None``:
the identity itself), made once by the stage builder with `make_shortcut` for the paper's
option A / B / C (Table 3). ``residual=False`` gives the *plain* counterpart of Sec. 4: the
same layers without the addition.

In a pre-activation block, ``preact`` says where the unit's own pre-activation (BN-ReLU; for
the ReLU-only ablation a ReLU) sits, following 1603.05027's appendix and the public code for
it: KaimingHe/resnet-1k-layers (the authors' ResNet-164/1001) and ``preresnet.lua`` of
fb.resnet.torch (Facebook's re-implementation, which the authors' later releases build on):

* ``"residual"``: on the residual branch only; the shortcut sees the raw input (most units).
* ``"both"``: before the split, so the shortcut sees the activated input too (the first unit
  of a stage, where the shortcut subsamples and/or projects).
* ``"none"``: no own pre-activation; the input is already activated (the first unit of the
  net, right after the stem's conv-BN-ReLU).

Layer names (``conv1``, ``bn1``, ..., ``downsample``) follow torchvision so that state dicts of
`BasicBlock` / `Bottleneck` nets with option B load into and from torchvision unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SHORTCUTS: tuple[str, ...] = ("A", "B", "C")
UNITS: tuple[str, ...] = ("original", "bn_after_add", "relu_before_add", "relu_preact",
                          "full_preact")
PREACT_PLACES: tuple[str, ...] = ("residual", "both", "none")
_CHOICES: dict[str, tuple[str, ...]] = {
    "block": ("basic", "bottleneck"),
    "stem": ("imagenet", "cifar"),
    "shortcut": SHORTCUTS,
    "unit": UNITS,
    "preact": PREACT_PLACES,
}


def check_options(**options: str) -> None:
    """Refuse a value outside its list of choices; the one place these options are checked
    (``ResNet`` checks its arguments here, `make_shortcut` and the pre-activation blocks
    theirs), so every such error reads the same."""
    for name, value in options.items():
        if value not in _CHOICES[name]:
            raise ValueError(f"{name} must be one of {_CHOICES[name]}, got {value!r}")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (BN follows or precedes every conv)."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class ShortcutA(nn.Module):
    """Option A: identity with stride subsampling and zero-padded extra channels; no parameters.

    Note:
        The paper does not say how option A subsamples. Taking every ``stride``-th pixel is
        what a stride-``stride`` 1x1 identity (the projection of option B without weights)
        sees, and what fb.resnet.torch's option A computes (a 1x1 average pool with stride).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"option A cannot reduce channels ({in_ch} -> {out_ch})")
        self.stride = stride
        self.extra = out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            # F.pad pads dims from the last backwards: (W, W, H, H, C_front, C_back).
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, zero_channels={self.extra}"


def make_shortcut(in_ch: int, out_ch: int, stride: int, option: str) -> nn.Module | None:
    """The module on the identity path of a block, or ``None`` for the identity itself.

    Option A pads with zeros where dimensions change; B projects (1x1 conv + BN) there; C
    projects in every block. Elsewhere A and B are the identity.

    Note:
        The paper's text names only the 1x1 conv of a projection; the BN after it is what the
        authors' released models and torchvision have (and what torchvision's state dicts
        hold as ``downsample.1``).
    """
    check_options(shortcut=option)
    changes = stride != 1 or in_ch != out_ch
    if option == "C" or (option == "B" and changes):
        return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
    if option == "A" and changes:
        return ShortcutA(in_ch, out_ch, stride)
    return None


class ResidualUnit(nn.Module):
    """What every block shares: the shortcut it was given, and adding it (1603.05027 calls a
    block a "residual unit"). Subclasses create ``conv1``, ``bn1``, ... and write ``forward``."""

    expansion = 1  # output channels = width * expansion
    num_convs = 2  # convs on the residual branch: conv1 .. conv{num_convs}
    unit = "original"  # the unit order (1603.05027 Fig. 4) this block computes

    def __init__(self, downsample: nn.Module | None, residual: bool):
        super().__init__()
        if downsample is not None and not residual:
            # Its tensors would be trained by nothing and saved in every checkpoint.
            raise ValueError("a plain block (residual=False) takes no shortcut module")
        # Registered before the convs, as in every checkpoint written so far: optimizer state
        # (momentum) is matched to parameters by position, and this order sets the position.
        self.downsample = downsample
        self.residual = residual

    def add_shortcut(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out`` plus the shortcut of ``x``; a plain block (``residual=False``) adds nothing."""
        if not self.residual:
            return out
        return out + (x if self.downsample is None else self.downsample(x))

    def zero_init_last(self) -> None:
        """Make the residual branch start at zero, so the block starts as its shortcut."""
        raise NotImplementedError

    def response_norms(self) -> list[nn.BatchNorm2d]:
        """The BN right after each 3x3 conv: its output is a layer response of the paper's
        Fig. 7 (after BN, before the ReLU / addition). Empty where no BN follows a conv."""
        return []


class BasicBlock(ResidualUnit):
    """Two 3x3 convs, the original unit (Fig. 2 left; ResNet-18/34 and the CIFAR nets).

    The stride sits on the first conv.
    """

    expansion = 1
    num_convs = 2

    def __init__(self, in_ch: int, width: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, residual: bool = True):
        super().__init__(downsample, residual)
        self.conv1 = conv3x3(in_ch, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width * self.expansion)
        self.bn2 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H', W')
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # A plain block keeps the ReLU it would have after the addition.
        return self.relu(self.add_shortcut(out, x))

    def zero_init_last(self) -> None:
        """Zero the last BN's scale: the block starts as ReLU(shortcut)."""
        nn.init.zeros_(self.bn2.weight)

    def response_norms(self) -> list[nn.BatchNorm2d]:
        return [self.bn1, self.bn2]


class Bottleneck(ResidualUnit):
    """1x1 reduce, 3x3, 1x1 restore (x4): ResNet-50/101/152, CIFAR ResNet-164/1001 (Fig. 5).

    Note:
        ``stride_in_1x1=True`` (default) is the paper's release ("v1": stride 2 on the first
        1x1). ``False`` is torchvision's "v1.5" (stride 2 on the 3x3): slightly more MACs,
        about 0.5% better top-1, and the layout torchvision's weights need.
    """

    expansion = 4
    num_convs = 3

    def __init__(self, in_ch: int, width: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, residual: bool = True,
                 stride_in_1x1: bool = True):
        super().__init__(downsample, residual)
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_ch, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, width * self.expansion)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, 4w, H', W')
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.add_shortcut(out, x))

    def zero_init_last(self) -> None:
        """Zero the last BN's scale: the block starts as ReLU(shortcut)."""
        nn.init.zeros_(self.bn3.weight)

    def response_norms(self) -> list[nn.BatchNorm2d]:
        return [self.bn2]  # the only 3x3 conv


def _default_preact(preact: str | None, downsample: nn.Module | None) -> str:
    """A full pre-activation block's ``preact`` (see the module docstring). By default a lone
    block that changes dimensions activates before the split, as the first unit of a stage
    does in the reference code; `ResNet` always says where."""
    if preact is None:
        return "both" if downsample is not None else "residual"
    check_options(preact=preact)
    return preact


class PreActBasicBlock(ResidualUnit):
    """Two 3x3 convs, full pre-activation (1603.05027 Fig. 1b, Fig. 4e).

    BN normalizes each conv's input, not its output, and nothing follows the addition: the
    net adds one BN-ReLU after its last unit. With ``preact="none"`` the stem's BN-ReLU is
    this unit's pre-activation, so ``bn1`` is an `nn.Identity` (no tensors of its own).
    """

    unit = "full_preact"
    expansion = 1
    num_convs = 2

    def __init__(self, in_ch: int, width: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, residual: bool = True,
                 preact: str | None = None):
        super().__init__(downsample, residual)
        self.preact = _default_preact(preact, downsample)
        self.conv1 = conv3x3(in_ch, width, stride)
        self.bn1 = nn.Identity() if self.preact == "none" else nn.BatchNorm2d(in_ch)
        self.conv2 = conv3x3(width, width * self.expansion)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H', W')
        pre = x if self.preact == "none" else self.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        return self.add_shortcut(out, x if self.preact == "residual" else pre)

    def zero_init_last(self) -> None:
        """Zero the last conv (no BN follows it): the block starts as its shortcut."""
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(ResidualUnit):
    """Bottleneck with full pre-activation (1603.05027; ResNet-164/1001, ImageNet ResNet-200).

    Same layer order and ``preact`` places as `PreActBasicBlock`; the stride follows
    ``stride_in_1x1`` as in `Bottleneck` (the authors' releases stride the first 1x1).
    """

    unit = "full_preact"
    expansion = 4
    num_convs = 3

    def __init__(self, in_ch: int, width: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, residual: bool = True,
                 stride_in_1x1: bool = True, preact: str | None = None):
        super().__init__(downsample, residual)
        self.preact = _default_preact(preact, downsample)
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_ch, width, s1)
        self.bn1 = nn.Identity() if self.preact == "none" else nn.BatchNorm2d(in_ch)
        self.conv2 = conv3x3(width, width, s3)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, width * self.expansion)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, 4w, H', W')
        pre = x if self.preact == "none" else self.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return self.add_shortcut(out, x if self.preact == "residual" else pre)

    def zero_init_last(self) -> None:
        """Zero the last conv (no BN follows it): the block starts as its shortcut."""
        nn.init.zeros_(self.conv3.weight)
