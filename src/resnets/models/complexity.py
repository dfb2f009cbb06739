"""Parameter and multiply-add counts, measured with PyTorch's own FLOP counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-adds of one forward pass on a single ``(C, H, W)`` image.

    Convolutions and the fc layer, as the paper counts them (FlopCounterMode reports
    2 FLOPs per multiply-add). BN, ReLU, pooling and additions are not counted.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    first = next(model.parameters())
    try:
        with counter:
            model(torch.zeros(1, *input_size, device=first.device, dtype=first.dtype))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
