"""Layer responses of the paper's Fig. 7: the standard deviation of each 3x3 layer's output,
after BN and before the ReLU / addition, on held-out data.

Each layer's number is the mean over its channels of the per-channel standard deviation
(over images and positions). For a BN output, a channel's std is roughly |gamma| on data like
the training data, so the figure shows how strongly each layer modifies the signal: residual
nets are expected to respond less than their plain twins, deeper ResNets less still.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from ..models.blocks import ResidualUnit


def response_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """``(name, BN)`` for every 3x3 conv whose BN directly follows it, in forward order.

    Includes the CIFAR stem (a 3x3 conv + BN); an ImageNet 7x7 stem is not a 3x3 layer.
    Empty when the blocks have no such layer (pre-activation, BN after addition): every net
    has a conv-BN stem, but the stem alone is no Fig. 7 curve.
    """
    names = {m: n for n, m in model.named_modules()}
    layers = [(names[bn], bn) for module in model.modules() if isinstance(module, ResidualUnit)
              for bn in module.response_norms()]
    stem = getattr(model, "conv1", None)
    if layers and isinstance(stem, nn.Conv2d) and stem.kernel_size == (3, 3) and isinstance(
            getattr(model, "bn1", None), nn.BatchNorm2d):
        layers.insert(0, ("bn1", model.bn1))
    return layers


def responses_undefined(model: nn.Module) -> str | None:
    """Why Fig. 7's responses are undefined for ``model``, or None when `response_layers` finds
    them. The figure measures a 3x3 conv's output after its BN: a pre-activation unit puts BN
    before each conv and ``bn_after_add`` puts it after the addition, so no layer qualifies."""
    if response_layers(model):
        return None
    units = sorted({m.unit for m in model.modules() if isinstance(m, ResidualUnit)})
    return (f"its units ({', '.join(units) or 'none'}) have no 3x3 layer with BN right "
            f"after the conv (pre-activation units put BN before each conv, bn_after_add after "
            f"the addition), so Fig. 7's responses (after BN, before ReLU / addition) are "
            f"undefined for it; they exist for nets of original, relu_before_add or "
            f"relu_preact units, plain or residual")


class _ChannelMoments:
    """Streaming per-channel sums in float64 (exact enough for 10k images)."""

    def __init__(self):
        self.n = 0
        self.s = self.ss = None

    def __call__(self, module, inputs, output: torch.Tensor) -> None:
        x = output.detach().double().transpose(0, 1).flatten(1)  # (C, B*H*W)
        s, ss = x.sum(1), (x * x).sum(1)
        self.s = s if self.s is None else self.s + s
        self.ss = ss if self.ss is None else self.ss + ss
        self.n += x.shape[1]

    def std(self) -> torch.Tensor:
        mean = self.s / self.n
        return (self.ss / self.n - mean * mean).clamp_min(0).sqrt()  # (C,)


@torch.no_grad()
def layer_response_std(model: nn.Module,
                       batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> list[dict]:
    """``[{"layer": name, "std": float}, ...]`` in forward order, over all ``batches``."""
    layers = response_layers(model)
    if not layers:
        raise ValueError(f"no Fig. 7 responses: {responses_undefined(model)}")
    moments = [_ChannelMoments() for _ in layers]
    handles = [bn.register_forward_hook(m) for (_, bn), m in zip(layers, moments, strict=True)]
    was_training = model.training
    model.eval()
    try:
        for x, _ in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [{"layer": name, "std": m.std().mean().item()}
            for (name, _), m in zip(layers, moments, strict=True)]


def plot_responses(curves: dict[str, list[float]], path: str | Path, *,
                   data: str | None = None) -> Path:
    """Fig. 7 style: std per layer in original order (top) and sorted descending (bottom).

    ``data``: the images measured (e.g. "the test split (10000 images)"), in the title."""
    import matplotlib  # imported when drawn, as in curves.plot_panels

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), dpi=120)
    for label, stds in curves.items():
        idx = range(1, len(stds) + 1)
        top.plot(idx, stds, marker=".", lw=1, label=label)
        bottom.plot(idx, sorted(stds, reverse=True), marker=".", lw=1, label=label)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    title = "Standard deviation of 3x3 layer responses (after BN, before ReLU/addition)"
    fig.suptitle(title if data is None else f"{title}\non {data}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
