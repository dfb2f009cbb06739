"""The images a training run trains and validates on: the one rule, used by the trainer and by
`resnets eval` when it re-creates a run's ``train`` or ``val`` split from its checkpoint."""

from __future__ import annotations

import torch

from ..config import finetune_val_split
from ..data import split_indices
from ..errors import UserError


def run_split(n: int, *, val_split: int, seed: int, train_subset: int | None = None,
              source: str = "the data", val_folder: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_idx, val_idx)`` of a run over ``n`` images (``source`` names them in errors;
    ``val_folder``: the data has a val/ folder that ``val_split=0`` validates on).

    ``val_split`` images held out at random (`split_indices`, seeded by ``seed``); the rest,
    or a fixed seeded subset of ``train_subset`` of them, is trained on. Both are sorted int64.
    """
    if val_split >= n:
        zero = ("--val-split 0 validates on its val/ folder instead" if val_folder else
                "--val-split 0 trains on all of them without validation")
        raise UserError(f"--val-split {val_split} leaves no training images: the data "
                        f"({source}) holds only {n}. Use --val-split {finetune_val_split(n)} "
                        f"(a tenth) or any number below {n}; {zero}.")
    train_idx, val_idx = split_indices(n, val_split, seed)
    return train_subset_of(train_idx, train_subset, seed), val_idx


def train_subset_of(train_idx: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """A fixed, seeded subset: the same images for every run with this seed."""
    if size is None or size >= len(train_idx):
        return train_idx
    g = torch.Generator().manual_seed(seed + 1)
    return train_idx[torch.randperm(len(train_idx), generator=g)[:size].sort().values]
