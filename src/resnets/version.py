"""The package's version, and the versions of the stack a result was produced with."""

from __future__ import annotations

import sys

import torch

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """resnets, torch, torchvision and Python versions, recorded beside every result."""
    import torchvision  # only when a record is written: `import resnets` stays light

    return {"resnets": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": sys.version.split()[0]}
