"""The registered networks of PAPER.md: ImageNet (Table 1) and CIFAR-10 (Sec. 4.2) families.

Shortcut options, as the paper uses them:

* ImageNet ``resnetNN`` default to option B: the paper's choice for the bottleneck nets
  (ResNet-50/101/152) and torchvision's layout (its weights need it). The ResNet-18/34 of
  Table 2 and Fig. 4, compared with plain-18/34, use option A (no extra parameters): those
  are ``resnet18_a`` and ``resnet34_a`` (Table 3 compares A, B and C on ResNet-34; ``shortcut=``
  picks any of them).
* CIFAR nets use option A (so residual and plain twins have identical parameters), except
  the bottleneck nets of 1603.05027 (ResNet-164/1001), whose first unit widens 16 -> 64
  channels: they use projections where dimensions change (option B), as that paper's code does.

Every builder takes the `ResNet` keyword arguments as overrides, e.g.
``create_model("resnet50", stride_in_1x1=False)``. One short function per registered name, so
that ``grep "def resnet56"`` finds it; its docstring is the description `resnets models` shows.
"""

from __future__ import annotations

from .registry import register_model
from .resnet import ResNet

IMAGENET_LAYERS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


def imagenet_resnet(depth: int, overrides: dict, **defaults) -> ResNet:
    """ImageNet net of Table 1: 7x7 stem, 4 stages of 64/128/256/512 (x4 for bottlenecks).

    ``defaults`` are the registered variant's own options (``shortcut="A"`` ...); the caller's
    ``overrides`` win over both them and the family's.
    """
    block, layers = IMAGENET_LAYERS[depth]
    cfg = dict(block=block, layers=layers, widths=(64, 128, 256, 512), stem="imagenet",
               stem_width=64, shortcut="B")
    return ResNet(**{**cfg, **defaults, **overrides})


def cifar_resnet(depth: int, overrides: dict, **defaults) -> ResNet:
    """CIFAR net of depth 6n+2 (basic) or 9n+2 (bottleneck): 3 stages of 16/32/64 filters.

    ``defaults`` and ``overrides`` as for `imagenet_resnet`.
    """
    cfg = dict(block="basic", widths=(16, 32, 64), stem="cifar", stem_width=16, shortcut="A",
               num_classes=10)
    cfg = {**cfg, **defaults, **overrides}
    per_block = 2 if cfg["block"] == "basic" else 3
    if (depth - 2) % (3 * per_block):
        raise ValueError(f"CIFAR {cfg['block']} depth must be {3 * per_block}n+2, got {depth}")
    n = (depth - 2) // (3 * per_block)
    return ResNet(**{"layers": (n, n, n), **cfg})


# ImageNet, Table 1: option B (torchvision's layout; the paper's choice for 50/101/152).
@register_model(family="imagenet", depth=18)
def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (Table 1), option B; Table 2's ResNet-18 is resnet18_a (option A)"""
    return imagenet_resnet(18, kwargs)


@register_model(family="imagenet", depth=34)
def resnet34(**kwargs) -> ResNet:
    """ResNet-34 (Table 1), option B; Table 2's ResNet-34 is resnet34_a (option A)"""
    return imagenet_resnet(34, kwargs)


@register_model(family="imagenet", depth=50)
def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (Table 1), option B"""
    return imagenet_resnet(50, kwargs)


@register_model(family="imagenet", depth=101)
def resnet101(**kwargs) -> ResNet:
    """ResNet-101 (Table 1), option B"""
    return imagenet_resnet(101, kwargs)


@register_model(family="imagenet", depth=152)
def resnet152(**kwargs) -> ResNet:
    """ResNet-152 (Table 1), option B"""
    return imagenet_resnet(152, kwargs)


# ImageNet, Table 2 / Fig. 4: the residual nets compared with plain ones, and those plain ones.
@register_model(family="imagenet", depth=18)
def resnet18_a(**kwargs) -> ResNet:
    """ResNet-18 of Table 2 / Fig. 4: option A, no extra parameters (same count as plain-18)"""
    return imagenet_resnet(18, kwargs, shortcut="A")


@register_model(family="imagenet", depth=18)
def plain18(**kwargs) -> ResNet:
    """plain-18: ResNet-18 without shortcuts"""
    return imagenet_resnet(18, kwargs, residual=False)


@register_model(family="imagenet", depth=34)
def resnet34_a(**kwargs) -> ResNet:
    """ResNet-34 of Table 2 / Fig. 4: option A, no extra parameters (same count as plain-34)"""
    return imagenet_resnet(34, kwargs, shortcut="A")


@register_model(family="imagenet", depth=34)
def plain34(**kwargs) -> ResNet:
    """plain-34: ResNet-34 without shortcuts"""
    return imagenet_resnet(34, kwargs, residual=False)


# ImageNet, 1603.05027: full pre-activation units.
@register_model(family="imagenet", depth=18)
def preact_resnet18(**kwargs) -> ResNet:
    """pre-activation ResNet-18 (1603.05027)"""
    return imagenet_resnet(18, kwargs, unit="full_preact")


@register_model(family="imagenet", depth=34)
def preact_resnet34(**kwargs) -> ResNet:
    """pre-activation ResNet-34 (1603.05027)"""
    return imagenet_resnet(34, kwargs, unit="full_preact")


@register_model(family="imagenet", depth=50)
def preact_resnet50(**kwargs) -> ResNet:
    """pre-activation ResNet-50 (1603.05027)"""
    return imagenet_resnet(50, kwargs, unit="full_preact")


@register_model(family="imagenet", depth=101)
def preact_resnet101(**kwargs) -> ResNet:
    """pre-activation ResNet-101 (1603.05027)"""
    return imagenet_resnet(101, kwargs, unit="full_preact")


@register_model(family="imagenet", depth=152)
def preact_resnet152(**kwargs) -> ResNet:
    """pre-activation ResNet-152 (1603.05027)"""
    return imagenet_resnet(152, kwargs, unit="full_preact")


@register_model(family="imagenet", depth=200)
def preact_resnet200(**kwargs) -> ResNet:
    """pre-activation ResNet-200 (1603.05027)"""
    return imagenet_resnet(200, kwargs, unit="full_preact")


# CIFAR-10, Sec. 4.2 / Table 6: 6n+2 layers, option A.
@register_model(family="cifar", depth=8)
def resnet8(**kwargs) -> ResNet:
    """tiny CIFAR ResNet-8 (n=1) for fast tests"""
    return cifar_resnet(8, kwargs)


@register_model(family="cifar", depth=20)
def resnet20(**kwargs) -> ResNet:
    """CIFAR ResNet-20 (Table 6), option A"""
    return cifar_resnet(20, kwargs)


@register_model(family="cifar", depth=32)
def resnet32(**kwargs) -> ResNet:
    """CIFAR ResNet-32 (Table 6), option A"""
    return cifar_resnet(32, kwargs)


@register_model(family="cifar", depth=44)
def resnet44(**kwargs) -> ResNet:
    """CIFAR ResNet-44 (Table 6), option A"""
    return cifar_resnet(44, kwargs)


@register_model(family="cifar", depth=56)
def resnet56(**kwargs) -> ResNet:
    """CIFAR ResNet-56 (Table 6), option A"""
    return cifar_resnet(56, kwargs)


@register_model(family="cifar", depth=110)
def resnet110(**kwargs) -> ResNet:
    """CIFAR ResNet-110 (Table 6), option A"""
    return cifar_resnet(110, kwargs)


@register_model(family="cifar", depth=1202)
def resnet1202(**kwargs) -> ResNet:
    """CIFAR ResNet-1202 (Table 6), option A"""
    return cifar_resnet(1202, kwargs)


# CIFAR-10, Fig. 6 left: the plain twins (same layers and parameters as option A).
@register_model(family="cifar", depth=20)
def plain20(**kwargs) -> ResNet:
    """CIFAR plain-20 (Fig. 6 left)"""
    return cifar_resnet(20, kwargs, residual=False)


@register_model(family="cifar", depth=32)
def plain32(**kwargs) -> ResNet:
    """CIFAR plain-32 (Fig. 6 left)"""
    return cifar_resnet(32, kwargs, residual=False)


@register_model(family="cifar", depth=44)
def plain44(**kwargs) -> ResNet:
    """CIFAR plain-44 (Fig. 6 left)"""
    return cifar_resnet(44, kwargs, residual=False)


@register_model(family="cifar", depth=56)
def plain56(**kwargs) -> ResNet:
    """CIFAR plain-56 (Fig. 6 left)"""
    return cifar_resnet(56, kwargs, residual=False)


@register_model(family="cifar", depth=110)
def plain110(**kwargs) -> ResNet:
    """CIFAR plain-110 (Fig. 6 left)"""
    return cifar_resnet(110, kwargs, residual=False)


# CIFAR-10, 1603.05027: ResNet-110 with full pre-activation, and the bottleneck nets (9n+2).
# The bottleneck nets use projections where dimensions change, as in the authors' code for
# that paper (KaimingHe/resnet-1k-layers; the first unit widens 16 -> 64). The original-unit
# twins make all five unit orders of Table 2 exist at 110 and 164:
# create_model("resnet164", unit=...) is preact_resnet164 for unit="full_preact".
@register_model(family="cifar", depth=110)
def preact_resnet110(**kwargs) -> ResNet:
    """CIFAR pre-activation ResNet-110 (basic)"""
    return cifar_resnet(110, kwargs, unit="full_preact")


@register_model(family="cifar", depth=164)
def resnet164(**kwargs) -> ResNet:
    """CIFAR ResNet-164 (bottleneck, 9n+2), original unit, option B"""
    return cifar_resnet(164, kwargs, block="bottleneck", shortcut="B")


@register_model(family="cifar", depth=164)
def preact_resnet164(**kwargs) -> ResNet:
    """CIFAR pre-activation ResNet-164 (bottleneck, 9n+2)"""
    return cifar_resnet(164, kwargs, block="bottleneck", unit="full_preact", shortcut="B")


@register_model(family="cifar", depth=1001)
def resnet1001(**kwargs) -> ResNet:
    """CIFAR ResNet-1001 (bottleneck, 9n+2), original unit, option B"""
    return cifar_resnet(1001, kwargs, block="bottleneck", shortcut="B")


@register_model(family="cifar", depth=1001)
def preact_resnet1001(**kwargs) -> ResNet:
    """CIFAR pre-activation ResNet-1001 (bottleneck, 9n+2)"""
    return cifar_resnet(1001, kwargs, block="bottleneck", unit="full_preact", shortcut="B")
