"""timm's plain ResNet weights as resnets checkpoints.

``timm.create_model("resnet50")`` and its ``.tv``/``.a1``/... tags have resnets' keys (see
`resnets.serve.weights`). Only two spellings need mapping: a ``module.`` prefix (a
DistributedDataParallel wrapper saved as is) and ``head.fc.`` for the classifier (timm's newer
heads). timm's hub files are usually ``model.safetensors`` with a ``config.json`` beside them,
whose ``pretrained_cfg`` (crop_pct, interpolation, mean, std) gives the preprocessing.
Variants with other layers (deep-stem ``resnet50d``, ``seresnet``, group norm, and
``resnetv2_*``, a pre-activation net with ``stem.``/``stages.`` names and projection shortcuts
without BN) are refused with the keys that do not fit.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..checkpoint import HEAD, read_state_dict
from ..data.folder import IMAGENET_MEAN, IMAGENET_STD
from ..errors import CheckpointError
from ..models import list_models
from .weights import INTERPOLATIONS, ImportedWeights, build_imported, strip_prefix


def import_timm(path: str | os.PathLike, *, model: str | None = None,
                num_classes: int | None = None, classes: list[str] | None = None,
                resize: int | None = None, crop: int | None = None,
                interpolation: str | None = None) -> ImportedWeights:
    """Weights of a timm ResNet (``resnet18/34/50/101/152`` and their tags) from a local
    ``.safetensors``/``.pth`` file, as an `ImportedWeights`.

    A ``config.json`` beside the file (as in timm's hub repositories) supplies the
    architecture, label names and ``pretrained_cfg`` (input size, crop_pct, interpolation,
    mean, std); without one timm's defaults apply: crop_pct 0.875 (resize 256, crop 224),
    bilinear, ImageNet mean/std. Arguments override both.
    """
    path = Path(path).expanduser()
    state = read_state_dict(path)
    if any(k.startswith(("stem.", "stages.")) for k in state):
        raise CheckpointError(
            f"{path} holds a timm ResNetV2 (keys stem.*, stages.*): a pre-activation net whose "
            f"projection shortcuts have no BN, unlike resnets' preact nets. Only timm's "
            f"plain ResNets (resnet18/34/50/101/152) can be imported.")
    state = strip_prefix(state, "module.")
    state = {(HEAD + k[len("head.fc"):] if k.startswith("head.fc.") else k): v
             for k, v in state.items()}
    cfg = _timm_config(path)
    pretrained = cfg.get("pretrained_cfg") or {}

    def field(name: str, default: Any) -> Any:  # null counts as absent, as in timm
        value = pretrained.get(name)
        return default if value is None else value

    size = int(field("input_size", (3, 224, 224))[-1])
    crop_pct = float(field("crop_pct", 0.875))
    pre = {"resize": math.floor(size / crop_pct), "crop": size,
           "interpolation": field("interpolation", "bilinear"),
           "mean": field("mean", IMAGENET_MEAN), "std": field("std", IMAGENET_STD)}
    pre.update({k: v for k, v in (("resize", resize), ("crop", crop),
                                  ("interpolation", interpolation)) if v is not None})
    arch = cfg.get("architecture")
    if model is None and arch and arch in list_models("imagenet"):
        model = arch
    return build_imported(state, model=model, num_classes=num_classes, classes=classes,
                  categories=cfg.get("label_names"), preprocessing=pre,
                  source={"format": "timm", "weights": str(path.resolve()),
                          "architecture": arch, "pretrained_cfg": pretrained or None})


def _timm_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` beside timm weights ({} when there is none), its fields checked."""
    file = path.parent / "config.json"
    if not file.is_file():
        return {}
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # ValueError: also not UTF-8
        raise CheckpointError(f"{file} (timm's model config beside the weights) is not "
                              f"readable JSON ({e}); fix or remove it.") from None
    if not isinstance(cfg, dict):
        return {}
    _check_timm_config(cfg, file)
    return cfg


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# The fields of timm's config.json that the import reads: (key, what it must be, test).
_TIMM_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("architecture", "a model name such as \"resnet50\"", lambda v: isinstance(v, str)),
    ("label_names", "a list of class names", lambda v: isinstance(v, list)
     and all(isinstance(n, str) for n in v)),
    ("pretrained_cfg.input_size", "[3, H, W] with H, W >= 1, e.g. [3, 224, 224]",
     lambda v: isinstance(v, list) and len(v) == 3 and all(
         isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in v)),
    ("pretrained_cfg.crop_pct", "a number in (0, 1]: the crop's share of the resized image "
     "(timm's default 0.875)", lambda v: _is_number(v) and 0 < v <= 1),
    ("pretrained_cfg.interpolation", f"one of {', '.join(INTERPOLATIONS)}",
     lambda v: v in INTERPOLATIONS),
    ("pretrained_cfg.mean", "3 numbers, one per RGB channel, e.g. [0.485, 0.456, 0.406]",
     lambda v: isinstance(v, list) and len(v) == 3 and all(_is_number(n) for n in v)),
    ("pretrained_cfg.std", "3 positive numbers, one per RGB channel, e.g. [0.229, 0.224, "
     "0.225]", lambda v: isinstance(v, list) and len(v) == 3
     and all(_is_number(n) and n > 0 for n in v)),
)


def _check_timm_config(cfg: dict[str, Any], file: Path) -> None:
    """A `CheckpointError` naming ``file``, the field and the fix for the first field of
    ``cfg`` the import cannot use (null counts as absent, as in timm)."""
    def refuse(key: str, expected: str, value: Any) -> CheckpointError:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return CheckpointError(f"{file} (timm's model config beside the weights): {key} must "
                               f"be {expected}, got {shown}. Correct the field, or delete it "
                               f"to get timm's default.")

    pretrained = cfg.get("pretrained_cfg")
    if pretrained is not None and not isinstance(pretrained, dict):
        raise refuse("pretrained_cfg", 'an object such as {"crop_pct": 0.875, "input_size": '
                     '[3, 224, 224]}', pretrained)
    for key, expected, valid in _TIMM_FIELDS:
        parent, _, name = key.rpartition(".")
        record = (pretrained or {}) if parent else cfg
        value = record.get(name)
        if value is not None and not valid(value):
            raise refuse(key, expected, value)

