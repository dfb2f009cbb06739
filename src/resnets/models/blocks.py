"""Residual building blocks of He et al. (2016) and the unit variants of He et al. (ECCV 2016).

One `BasicBlock` (two 3x3 convs) and one `Bottleneck` (1x1 reduce, 3x3, 1x1 restore x4)
cover every block of the paper through arguments instead of forked copies:

* ``residual=False`` gives the *plain* counterpart (same layers, no shortcut).
* ``shortcut`` picks the paper's option A / B / C (Table 3) for the identity path.
* ``unit`` picks the order of BN / ReLU / addition (PAPER.md section 10, Fig. 4 of 1603.05027):

  ==================  =================================================  ===========
  unit                residual branch                                    after add
  ==================  =================================================  ===========
  original            conv-BN-ReLU ... conv-BN                           ReLU
  bn_after_add        conv-BN-ReLU ... conv                              BN, ReLU
  relu_before_add     conv-BN-ReLU ... conv-BN-ReLU                      nothing
  relu_preact         ReLU-conv-BN ... ReLU-conv-BN                      nothing
  full_preact         BN-ReLU-conv ... BN-ReLU-conv                      nothing
  ==================  =================================================  ===========

For the two pre-activation units, ``preact`` says where the unit's own pre-activation
(``full_preact``: BN-ReLU, ``relu_preact``: ReLU) sits, following 1603.05027's appendix and
the public code for it: KaimingHe/resnet-1k-layers (the authors' ResNet-164/1001) and
``preresnet.lua`` of fb.resnet.torch (Facebook's re-implementation, which the authors'
later releases build on):

* ``"residual"``: on the residual branch only; the shortcut sees the raw input (most units).
* ``"both"``: before the split, so the shortcut sees the activated input too (the first unit
  of a stage, where the shortcut subsamples and/or projects).
* ``"none"``: no own pre-activation; the input is already activated (the first unit of the
  net, right after the stem's conv-BN-ReLU).

Layer names (``conv1``, ``bn1``, ..., ``downsample``) follow torchvision so that the state dicts
of the ``original`` unit with option B load into and from torchvision unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Shortcut = Literal["A", "B", "C"]
Unit = Literal["original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact"]
UNITS: tuple[str, ...] = (
    "original",
    "bn_after_add",
    "relu_before_add",
    "relu_preact",
    "full_preact",
)
SHORTCUTS: tuple[str, ...] = ("A", "B", "C")
PREACT_UNITS: tuple[str, ...] = ("relu_preact", "full_preact")
PREACT_PLACES: tuple[str, ...] = ("residual", "both", "none")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (BN follows or precedes every conv)."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class ShortcutA(nn.Module):
    """Option A: identity with stride subsampling and zero-padded extra channels; no parameters."""

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


def make_shortcut(
    in_ch: int, out_ch: int, stride: int, option: str, residual: bool
) -> nn.Module | None:
    """The module on the identity path, or ``None`` for a plain identity (or a plain net)."""
    if not residual:
        return None
    if option not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {option!r}")
    changes = stride != 1 or in_ch != out_ch
    if option == "C" or (option == "B" and changes):
        return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
    if option == "A" and changes:
        return ShortcutA(in_ch, out_ch, stride)
    return None


class ResidualUnit(nn.Module):
    """Shared forward of every block: a chain of convs with BN/ReLU placed by ``unit``.

    Subclasses create ``conv1..convK`` and call :meth:`_finish` with the conv channel plan.
    """

    expansion = 1

    def _finish(
        self,
        convs: list[nn.Conv2d],
        in_ch: int,
        out_ch: int,
        stride: int,
        shortcut: str,
        residual: bool,
        unit: str,
        preact: str | None,
    ) -> None:
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        self.unit = unit
        self.residual = residual
        self.downsample = make_shortcut(in_ch, out_ch, stride, shortcut, residual)
        if preact is None:
            # A lone full pre-activation unit that changes dimensions activates before the
            # split, as the first unit of a stage does in the reference code (module docstring).
            both = unit == "full_preact" and self.downsample is not None
            preact = "both" if both else "residual"
        if preact not in PREACT_PLACES:
            raise ValueError(f"preact must be one of {PREACT_PLACES}, got {preact!r}")
        if unit not in PREACT_UNITS and preact != "residual":
            raise ValueError(f"preact={preact!r} needs a pre-activation unit {PREACT_UNITS}, "
                             f"not {unit!r}")
        self.preact = preact
        for i, conv in enumerate(convs, start=1):
            setattr(self, f"conv{i}", conv)
            if unit == "full_preact" and i == 1 and preact == "none":
                # The stem's BN-ReLU is this unit's pre-activation: no BN of its own.
                setattr(self, f"bn{i}", nn.Identity())
                continue
            # Pre-activation normalizes a conv's input; every other unit its output.
            ch = conv.in_channels if unit == "full_preact" else conv.out_channels
            setattr(self, f"bn{i}", nn.BatchNorm2d(ch))
        self.num_convs = len(convs)
        self.relu = nn.ReLU(inplace=True)

    def _layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        return [
            (getattr(self, f"conv{i}"), getattr(self, f"bn{i}"))
            for i in range(1, self.num_convs + 1)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H', W')
        unit = self.unit
        layers = self._layers()
        if unit in PREACT_UNITS:
            out = self._pre_activate(x, layers[0][1])
            identity = out if self.preact == "both" else x
            for i, (conv, bn) in enumerate(layers):
                if unit == "full_preact":  # BN-ReLU-conv
                    out = conv(F.relu(bn(out)) if i else out)
                else:  # relu_preact: ReLU-conv-BN
                    out = bn(conv(F.relu(out) if i else out))
        else:
            identity = out = x
            for i, (conv, bn) in enumerate(layers):
                last = i == len(layers) - 1
                out = conv(out)
                if not (last and unit == "bn_after_add"):
                    out = bn(out)
                if not last or unit == "relu_before_add":
                    out = F.relu(out)
        if not self.residual:
            # Plain net: the last layer still gets the activation it would have after the add.
            return self._after_add(out, layers)
        if self.downsample is not None:
            identity = self.downsample(identity)
        return self._after_add(out + identity, layers)

    def _pre_activate(self, x: torch.Tensor, bn1: nn.Module) -> torch.Tensor:
        """The unit's own pre-activation of its input (nothing when ``preact="none"``)."""
        if self.preact == "none":
            return x
        return F.relu(bn1(x) if self.unit == "full_preact" else x)

    def _after_add(self, out: torch.Tensor, layers) -> torch.Tensor:
        if self.unit == "original":
            return self.relu(out)
        if self.unit == "bn_after_add":
            return self.relu(layers[-1][1](out))
        return out

    def zero_init_last(self) -> None:
        """Make the residual branch start at zero, so the block starts as its shortcut."""
        conv, bn = self._layers()[-1]
        if self.unit in ("bn_after_add", "full_preact"):
            # The last BN is outside the branch (or before the last conv): zero the conv.
            nn.init.zeros_(conv.weight)
        else:
            nn.init.zeros_(bn.weight)

    def response_norms(self) -> list[nn.BatchNorm2d]:
        """The BN after each 3x3 conv: its output is the layer response of the paper's Fig. 7
        (after BN, before the ReLU / addition). Empty for units where BN does not directly
        follow the conv (``bn_after_add``, ``full_preact``)."""
        if self.unit in ("full_preact", "bn_after_add"):
            return []
        return [bn for conv, bn in self._layers() if conv.kernel_size == (3, 3)]


class BasicBlock(ResidualUnit):
    """Two 3x3 convs (ResNet-18/34 and every CIFAR basic net). Stride sits on the first conv."""

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        width: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        residual: bool = True,
        unit: str = "original",
        stride_in_1x1: bool = True,  # accepted for a uniform signature; no 1x1 here
        preact: str | None = None,
    ):
        super().__init__()
        out_ch = width * self.expansion
        convs = [conv3x3(in_ch, width, stride), conv3x3(width, out_ch)]
        self._finish(convs, in_ch, out_ch, stride, shortcut, residual, unit, preact)


class Bottleneck(ResidualUnit):
    """1x1 reduce - 3x3 - 1x1 restore (x4), ResNet-50/101/152 and CIFAR ResNet-164/1001.

    ``stride_in_1x1=True`` is the paper's original release ("v1": stride 2 on the first 1x1).
    ``stride_in_1x1=False`` is torchvision's "v1.5" (stride 2 on the 3x3): slightly more MACs
    and about 0.5% better top-1, and the layout torchvision's weights need.
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        width: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        residual: bool = True,
        unit: str = "original",
        stride_in_1x1: bool = True,
        preact: str | None = None,
    ):
        super().__init__()
        out_ch = width * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        convs = [conv1x1(in_ch, width, s1), conv3x3(width, width, s3), conv1x1(width, out_ch)]
        self._finish(convs, in_ch, out_ch, stride, shortcut, residual, unit, preact)
