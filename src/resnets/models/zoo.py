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
``create_model("resnet50", stride_in_1x1=False)``.
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


def imagenet_resnet(depth: int, **kwargs) -> ResNet:
    block, layers = IMAGENET_LAYERS[depth]
    cfg = dict(block=block, layers=layers, widths=(64, 128, 256, 512), stem="imagenet",
               stem_width=64, shortcut="B")
    cfg.update(kwargs)
    return ResNet(**cfg)


def cifar_resnet(depth: int, *, block: str = "basic", **kwargs) -> ResNet:
    """CIFAR net of depth 6n+2 (basic) or 9n+2 (bottleneck): 3 stages of 16/32/64 filters."""
    per_block = 2 if block == "basic" else 3
    if (depth - 2) % (3 * per_block):
        raise ValueError(f"CIFAR {block} depth must be {3 * per_block}n+2, got {depth}")
    n = (depth - 2) // (3 * per_block)
    cfg = dict(block=block, layers=(n, n, n), widths=(16, 32, 64), stem="cifar",
               stem_width=16, shortcut="A", num_classes=10)
    cfg.update(kwargs)
    return ResNet(**cfg)


def _imagenet(depth: int, prefix: str, description: str, suffix: str = "", **fixed):
    def builder(**kwargs) -> ResNet:
        return imagenet_resnet(depth, **{**fixed, **kwargs})

    builder.__name__ = f"{prefix}{depth}{suffix}"
    builder.__doc__ = description
    return register_model(family="imagenet", depth=depth, description=description)(builder)


def _cifar(depth: int, prefix: str, description: str, **fixed):
    def builder(**kwargs) -> ResNet:
        return cifar_resnet(depth, **{**fixed, **kwargs})

    builder.__name__ = f"{prefix}{depth}"
    builder.__doc__ = description
    return register_model(family="cifar", depth=depth, description=description)(builder)


for _d in (18, 34, 50, 101, 152):
    _note = f"; Table 2's ResNet-{_d} is resnet{_d}_a (option A)" if _d < 50 else ""
    _imagenet(_d, "resnet", f"ResNet-{_d} (Table 1), option B{_note}")
for _d in (18, 34):
    _imagenet(_d, "resnet", f"ResNet-{_d} of Table 2 / Fig. 4: option A, no extra parameters "
              f"(same count as plain-{_d})", suffix="_a", shortcut="A")
    _imagenet(_d, "plain", f"plain-{_d}: ResNet-{_d} without shortcuts", residual=False)
for _d in (18, 34, 50, 101, 152, 200):
    _imagenet(_d, "preact_resnet", f"pre-activation ResNet-{_d} (1603.05027)", unit="full_preact")

_cifar(8, "resnet", "tiny CIFAR ResNet-8 (n=1) for fast tests")
for _d in (20, 32, 44, 56, 110, 1202):
    _cifar(_d, "resnet", f"CIFAR ResNet-{_d} (Table 6), option A")
for _d in (20, 32, 44, 56, 110):
    _cifar(_d, "plain", f"CIFAR plain-{_d} (Fig. 6 left)", residual=False)
_cifar(110, "preact_resnet", "CIFAR pre-activation ResNet-110 (basic)", unit="full_preact")
# The bottleneck nets of 1603.05027 use projections where dimensions change, as in the
# authors' code for that paper (KaimingHe/resnet-1k-layers; the first unit widens 16 -> 64).
# The original-unit twins make all five unit orders of Table 2 exist at 110 and 164:
# create_model("resnet164", unit=...) is preact_resnet164 for unit="full_preact".
for _d in (164, 1001):
    _cifar(_d, "resnet", f"CIFAR ResNet-{_d} (bottleneck, 9n+2), original unit, option B",
           block="bottleneck", shortcut="B")
    _cifar(_d, "preact_resnet", f"CIFAR pre-activation ResNet-{_d} (bottleneck, 9n+2)",
           block="bottleneck", unit="full_preact", shortcut="B")
