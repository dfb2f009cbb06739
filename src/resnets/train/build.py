"""What a run trains with, built from its config: the device, the precision, the seeds, and
the model (fine-tuning start, frozen parts, SyncBatchNorm, DDP and compile wrappers)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_state_dict_for_model, read_state_dict
from ..config import TrainConfig
from ..device import resolve_device
from ..errors import UserError
from ..models import create_model, model_info
from .distributed import DistEnv, broadcast_object
from .precision import choose as choose_precision
from .precision import native_bf16


def run_device(cfg: TrainConfig, dist: DistEnv) -> torch.device:
    """The device of this process (under DDP on CUDA: its local rank's GPU)."""
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    if cfg.sync_bn and device.type != "cuda":
        raise UserError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU "
                        "kernel); drop --sync-bn for CPU / gloo runs.")
    return device


@dataclass(frozen=True)
class Precision:
    amp_dtype: torch.dtype | None  # bf16 autocast, or None for fp32
    channels_last: bool  # model and batches in channels_last memory format
    reason: str  # how it was chosen, for the log


def run_precision(cfg: TrainConfig, device: torch.device, dist: DistEnv) -> Precision:
    if cfg.precision == "auto":  # measured per machine and model; rank 0 decides for all
        choice = choose_precision(device, cfg.model, cfg.model_kwargs,
                                  cfg.batch_size // dist.world_size,
                                  _probe_size(cfg)) if dist.is_main else None
        choice = broadcast_object(choice, dist)
        bf16, layout, reason = choice.bf16, choice.channels_last, choice.reason
    else:
        bf16, layout = cfg.precision == "bf16", native_bf16(device)
        reason = f"--precision {cfg.precision}"
    return Precision(torch.bfloat16 if bf16 else None,
                     layout if cfg.channels_last is None else cfg.channels_last, reason)


def _probe_size(cfg: TrainConfig) -> tuple[int, int, int]:
    """The training input size: the family's, or the folder pipeline's crop."""
    c, h, w = model_info(cfg.model).input_size
    return (c, cfg.crop_size, cfg.crop_size) if h != 32 else (c, h, w)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, num_classes: int, *, load_init: bool) -> nn.Module:
    """The network to train, freshly initialised or (``load_init``) from ``cfg.init``."""
    try:
        model = create_model(cfg.model, num_classes=num_classes, **cfg.model_kwargs)
    except (TypeError, ValueError) as e:  # bad model_kwargs from the flags or the recipe
        raise UserError(f"cannot build {cfg.model} with {cfg.model_kwargs}: {e}. Fix "
                        f"--shortcut / --unit or the recipe's model_kwargs.") from None
    if load_init and cfg.init:
        # Fine-tuning: a head of another size is re-initialised.
        load_state_dict_for_model(model, read_state_dict(cfg.init), num_classes)
    return model


def freeze(model: nn.Module, parts: tuple[str, ...]) -> list[nn.Module]:
    """Keep the named parts fixed: no gradients (and `train_mode` keeps their BN statistics in
    eval mode). Returns the frozen modules."""
    known = {"stem": ["conv1", "bn1"], **{n: [n] for n in model.stage_names}}
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise UserError(f"--freeze {','.join(unknown)}: unknown part; choose from "
                        f"{', '.join(known)}.")
    frozen = [getattr(model, name) for p in parts for name in known[p]]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    model.train()
    for module in frozen:
        module.eval()


def place(model: nn.Module, cfg: TrainConfig, dist: DistEnv, device: torch.device,
          channels_last: bool) -> tuple[nn.Module, nn.Module]:
    """Move ``model`` to ``device``; returns it and the model the steps run (DDP, compile).
    Checkpoints always see the first, so they never hold a wrapper's prefix."""
    if cfg.sync_bn and dist.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    step_model = model
    if dist.enabled:
        step_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        step_model = torch.compile(step_model)
    return model, step_model
