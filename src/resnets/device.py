"""What machine this is: the torch device a ``--device`` option names, and names for logs,
configs and benchmark records."""

from __future__ import annotations

import os
import platform

import torch

from .errors import UserError


def resolve_device(name: str) -> torch.device:
    """The device ``--device NAME`` asks for (auto: CUDA when there is one, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} was asked for but no CUDA device is available "
                        f"(torch {torch.__version__}). Use --device cpu or --device auto.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from None


def autocast(device: torch.device | str, dtype: torch.dtype | None) -> torch.autocast:
    """The mixed-precision context of every forward pass: autocast to ``dtype`` (e.g.
    ``torch.bfloat16``) on ``device``'s type, or a context that changes nothing for None."""
    device_type = device if isinstance(device, str) else device.type
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's with its cores and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
