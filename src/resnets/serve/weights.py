"""Weights from other libraries as resnets checkpoints: what every importer shares.

The importers, one module per source:

* `resnets.serve.from_torchvision`: torchvision's ResNets (a ``.pth`` state dict or a weights
  enum such as ``torchvision:resnet50``, whose metadata gives classes and eval transform);
* `resnets.serve.from_timm`: timm's plain ResNets (``model.safetensors`` with the
  ``config.json`` beside it);
* `resnets.serve.from_akamaster`: akamaster/pytorch_resnet_cifar10's option-A CIFAR ResNets.

torchvision and timm name the layers of their plain ResNets exactly as resnets does (``conv1``,
``bn1``, ``layer1..4`` with blocks ``convK``/``bnK``/``downsample.0|1``, ``fc``) and put the
bottleneck's stride on the 3x3 ("v1.5"), so their state dicts load into
``create_model("resnetNN", stride_in_1x1=False)`` unchanged and compute the same logits
(`build_imported`).

Every import ends in an `ImportedWeights` whose ``save`` writes a resnets checkpoint (kind
``"weights"``) with ``normalization`` (channel mean/std), ``image_size`` and
``preprocessing`` (resize, crop, interpolation), so `resnets predict` treats it like a
checkpoint of `resnets train`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet18_Weights

from ..checkpoint import HEAD, load_state_dict_for_model, save_checkpoint
from ..data.device_loader import Normalization
from ..data.folder import IMAGENET_MEAN, IMAGENET_STD
from ..errors import CheckpointError
from ..models import create_model, list_models
from ..models.zoo import IMAGENET_LAYERS

TORCHVISION_PREFIX = "torchvision:"
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass
class ImportedWeights:
    """A model holding imported weights (eval mode) and the checkpoint record describing it."""

    model: nn.Module
    meta: dict[str, Any]
    dropped: list[str] = field(default_factory=list)  # head tensors left out (new num_classes)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a resnets checkpoint that `load_checkpoint` and `resnets predict` read."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise CheckpointError(f"--out {path}: resnets checkpoints are .safetensors files; "
                                  f"name the output e.g. {path.with_suffix('.safetensors')}.")
        path.parent.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(path, model=self.model, meta=self.meta)


def imagenet_preprocessing(*, resize: int = 256, crop: int = 224,
                           interpolation: str = "bilinear",
                           mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict[str, Any]:
    """The ``normalization``, ``image_size`` and ``preprocessing`` entries of a checkpoint
    record for an ImageNet-style eval transform: resize the shorter side to ``resize``,
    center-crop ``crop`` x ``crop``, scale to [0, 1], subtract ``mean``, divide by ``std``."""
    if interpolation not in INTERPOLATIONS:
        raise CheckpointError(f"interpolation {interpolation!r} is not one of "
                              f"{', '.join(INTERPOLATIONS)}.")
    if not 0 < crop <= resize:
        raise CheckpointError(f"the crop ({crop}) must be positive and at most the resize "
                              f"({resize}).")
    norm = Normalization("channel_mean_std", [float(v) for v in mean], [float(v) for v in std])
    return {"normalization": norm.to_dict(), "image_size": [3, int(crop), int(crop)],
            "preprocessing": {"resize": int(resize), "crop": int(crop),
                              "interpolation": interpolation}}


# --------------------------------------------------------------------------------------------
# Recognising architectures


def infer_model_name(state: dict[str, torch.Tensor]) -> str:
    """The registered ImageNet ResNet whose stages match the blocks found in ``state``."""
    counts = []
    for stage in range(1, 5):
        blocks = {k.split(".")[1] for k in state if k.startswith(f"layer{stage}.")}
        counts.append(len(blocks))
    block = "bottleneck" if any(".conv3." in k for k in state) else "basic"
    for depth, (kind, layers) in IMAGENET_LAYERS.items():
        if kind == block and tuple(layers) == tuple(counts) and f"resnet{depth}" in list_models():
            return f"resnet{depth}"
    raise CheckpointError(
        f"the weights hold {block} blocks per stage {tuple(counts)}, which is no registered "
        f"ImageNet ResNet ({', '.join(list_models('imagenet'))}). Pass --model NAME, or check "
        f"that the file holds a plain torchvision/timm ResNet.")




# --------------------------------------------------------------------------------------------
# Shared by the torchvision and timm importers


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """``state`` without ``prefix`` (e.g. a DataParallel wrapper's ``module.``) where every key
    has it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def check_plain_resnet(name: str) -> None:
    """Refuse a model that torchvision's and timm's plain ResNets do not fit: they match
    resnets' option-B ImageNet nets, and only them (not the option-A resnet18_a / resnet34_a)."""
    plain = [n for n in list_models("imagenet") if n.startswith("resnet") and n[6:].isdigit()]
    if name not in plain:
        raise CheckpointError(f"model {name!r} is not one of the ResNets whose torchvision / "
                              f"timm weights resnets can load ({', '.join(plain)}).")


def imagenet_categories() -> list[str]:
    """ImageNet-1k's class names, from torchvision's weight metadata."""
    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])  # no download needed


def build_imported(state: dict[str, torch.Tensor], *, model: str | None, num_classes: int | None,
           classes: list[str] | None, categories: list[str] | None,
           preprocessing: dict[str, Any], source: dict[str, Any]) -> ImportedWeights:
    """Model and record from a state dict in torchvision's layout. ``classes`` are the
    user's names (must fit the head); ``categories`` the weights' own (used when they fit)."""
    name = model or infer_model_name(state)
    check_plain_resnet(name)
    head = state.get(f"{HEAD}.weight")
    n = num_classes or (len(classes) if classes else None) \
        or (int(head.shape[0]) if head is not None else 1000)
    if classes is not None and len(classes) != n:
        raise CheckpointError(f"{len(classes)} class names were given for a classifier with "
                              f"{n} outputs. Give one name per output (or --num-classes).")
    kwargs = {"stride_in_1x1": False, "num_classes": n}  # torchvision's "v1.5" layout
    net = create_model(name, **kwargs)
    dropped = load_state_dict_for_model(net, state, n)
    if classes is None:
        if dropped:  # a fresh head: its outputs have no names yet
            classes = [f"class_{i}" for i in range(n)]
        elif categories and len(categories) == n:
            classes = list(categories)
        else:  # a 1000-way torchvision/timm head is ImageNet-1k's
            classes = imagenet_categories() if n == 1000 else [f"class_{i}" for i in range(n)]
    meta = {"kind": "weights", "model": name, "model_kwargs": kwargs, "classes": list(classes),
            **imagenet_preprocessing(**preprocessing), "source": source,
            "head_dropped": dropped}
    return ImportedWeights(net.eval(), meta, dropped)
