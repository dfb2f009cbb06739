"""torchvision's ResNet weights as resnets checkpoints: a ``.pth``/``.safetensors`` state
dict, or a weights enum (``torchvision:resnet50``, ``torchvision:resnet18.IMAGENET1K_V1``)
whose metadata gives the class names and the eval transform (resize 256 or 232, crop 224).
The layers are named as resnets names them (see `resnets.serve.weights`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.hub
from torchvision.models import get_model_weights

from ..checkpoint import read_state_dict
from ..errors import CheckpointError
from .weights import (
    TORCHVISION_PREFIX,
    ImportedWeights,
    build_imported,
    check_plain_resnet,
    strip_prefix,
)


def import_torchvision(weights: str | os.PathLike, *, model: str | None = None,
                       num_classes: int | None = None, classes: list[str] | None = None,
                       resize: int | None = None, crop: int | None = None,
                       interpolation: str | None = None) -> ImportedWeights:
    """Torchvision ResNet weights as an `ImportedWeights`.

    Args:
        weights: ``"torchvision:resnet50"`` (the DEFAULT weights of that builder) or
            ``"torchvision:resnet50.IMAGENET1K_V1"``, fetched with torchvision's own weight
            enums into torch.hub's cache; or a local ``.pth``/``.safetensors`` state dict.
        model: resnets model name; default: the torchvision builder's name, or inferred from
            the blocks of a local file.
        num_classes: classifier size; default ``len(classes)``, else the weights'. Another
            size than the weights' drops their ``fc`` (with a warning).
        classes: class names, one per output; default the weights' categories
            (ImageNet-1k for a 1000-way head), else ``class_0``, ``class_1``, ...
        resize, crop, interpolation: override the eval transform (default: the weights'
            transform, else torchvision's classic 256 / 224 / bilinear).

    Offline, a ``torchvision:`` spec whose file is not in the cache raises a
    `CheckpointError` naming the URL and how to pass a downloaded copy instead.
    """
    spec = str(weights)
    if spec.startswith(TORCHVISION_PREFIX):
        name = spec[len(TORCHVISION_PREFIX):]
        model = model or name.partition(".")[0]
        check_plain_resnet(model)  # before a download that could not be used
        state, info = _fetch_torchvision(name)
    else:
        state = read_state_dict(spec)
        info = {"source": {"format": "torchvision", "weights": str(Path(spec).resolve())}}
    state = strip_prefix(state, "module.")
    pre = {"resize": 256, "crop": 224, "interpolation": "bilinear", **info.get("transform", {})}
    pre.update({k: v for k, v in (("resize", resize), ("crop", crop),
                                  ("interpolation", interpolation)) if v is not None})
    return build_imported(state, model=model, num_classes=num_classes, classes=classes,
                  categories=info.get("categories"), preprocessing=pre, source=info["source"])


def _fetch_torchvision(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and metadata of torchvision weights ``builder[.TAG]`` (download or cache)."""
    builder, _, tag = name.partition(".")
    try:
        enum = get_model_weights(builder)
    except (ValueError, KeyError):
        raise CheckpointError(f"torchvision has no model {builder!r}. Use e.g. "
                              f"torchvision:resnet50 or torchvision:resnet18.IMAGENET1K_V1.") \
            from None
    try:
        chosen = enum[tag] if tag else enum.DEFAULT
    except KeyError:
        raise CheckpointError(f"torchvision's {builder} has no weights {tag!r}; it has "
                              f"{', '.join(w.name for w in enum)}.") from None
    t = chosen.transforms()
    transform = {"resize": int(t.resize_size[0]), "crop": int(t.crop_size[0]),
                 "interpolation": t.interpolation.value, "mean": list(t.mean),
                 "std": list(t.std)}
    try:
        state = chosen.get_state_dict(progress=True)
    except Exception as e:  # network, disk and hash failures all end here
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(chosen.url).name
        flags = f"--model {builder} --resize {transform['resize']} --crop {transform['crop']}"
        raise CheckpointError(
            f"the download of torchvision weights {chosen} failed ({type(e).__name__}: {e}). "
            f"If this machine is offline, fetch {chosen.url} on another one and either pass "
            f"the file with --weights PATH {flags}, or copy it to {cached}, where "
            f"torchvision looks first.") from None
    return state, {
        "categories": list(chosen.meta.get("categories") or []) or None,
        "transform": transform,
        "source": {"format": "torchvision", "weights": f"torchvision:{name}",
                   "name": str(chosen), "url": chosen.url,
                   "recipe": chosen.meta.get("recipe"),
                   "metrics": chosen.meta.get("_metrics")},
    }

