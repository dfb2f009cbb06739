"""Pretrained weights shipped with the package, loaded by name with their sha256 checked.

A weight is named ``<model>.<dataset>`` (``resnet20.cifar10``). Like torchvision's weight enums
each one carries what a user needs to trust and use it: the recipe and config it was trained
with, iterations, validation error and the split it was measured on, the eval transform
(normalization), the classes, parameter count, data description and fingerprint (which
images, in which order: `resnets.data.fingerprint`), training device and time.
The files are resnets checkpoints of kind ``weights`` in ``resnets/models/weights/``, listed
with their metadata in ``manifest.json`` (written by ``resnets weights publish``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..errors import UserError

WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST = "manifest.json"
# What every shipped weight's metadata must say (checked by the tests and by `publish`).
REQUIRED_META = ("model", "model_kwargs", "dataset", "classes", "normalization", "image_size",
                 "recipe", "config", "iterations", "val_error", "val_error_measurement",
                 "val_error_fp32", "val_split", "train_error", "num_params", "data",
                 "data_fingerprint", "device", "train_time_s", "versions")


class UnknownWeightsError(UserError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class Weights:
    name: str  # "<model>.<dataset>"
    file: str  # file name inside the weights directory
    sha256: str  # of the file's bytes
    meta: dict[str, Any]
    root: Path = WEIGHTS_DIR

    @property
    def model(self) -> str:
        return self.meta["model"]

    @property
    def path(self) -> Path:
        return self.root / self.file

    def verify(self) -> Path:
        """The file's path, after checking that its bytes are the ones published."""
        if not self.path.is_file():
            raise UserError(f"the file of weights {self.name!r} is missing ({self.path}). "
                            f"Reinstall resnets or restore the file from git.")
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        if digest != self.sha256:
            raise UserError(f"weights {self.name!r} failed their sha256 check: {self.path} has "
                            f"{digest}, the manifest expects {self.sha256}. The file was "
                            f"changed or damaged; restore it from git or reinstall resnets.")
        return self.path

    def state_dict(self) -> dict[str, torch.Tensor]:
        tensors = load_file(self.verify())
        return {k.removeprefix("model."): v for k, v in tensors.items()
                if k.startswith("model.")}


def _manifest(root: Path | None = None) -> dict[str, Weights]:
    root = WEIGHTS_DIR if root is None else root
    path = root / MANIFEST
    if not path.is_file():
        return {}
    entries = json.loads(path.read_text())["weights"]
    return {e["name"]: Weights(e["name"], e["file"], e["sha256"], e["meta"], root)
            for e in entries}


def list_weights(model: str | None = None) -> list[str]:
    """Names of the shipped weights, optionally only those of one model."""
    return sorted(n for n, w in _manifest().items() if model is None or w.model == model)


def get_weights(name: str, *, model: str | None = None) -> Weights:
    """The weights ``name`` (``"resnet20.cifar10"``; with ``model`` given, ``"cifar10"`` too)."""
    shipped = _manifest()
    full = name if "." in name or model is None else f"{model}.{name}"
    if full in shipped:
        weights = shipped[full]
        if model is not None and weights.model != model:
            raise UserError(f"weights {full!r} belong to {weights.model!r}, not {model!r}.")
        return weights
    close = difflib.get_close_matches(full, shipped, n=3, cutoff=0.6)
    available = ", ".join(sorted(shipped)) or "none yet"
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownWeightsError(f"no pretrained weights named {full!r}.{hint} Available: "
                              f"{available} (`resnets models` shows which nets have them).")


def load_pretrained(model: torch.nn.Module, weights: Weights) -> torch.nn.Module:
    """Copy checked ``weights`` into ``model`` (strict: every tensor must fit)."""
    model.load_state_dict(weights.state_dict(), strict=True)
    return model
