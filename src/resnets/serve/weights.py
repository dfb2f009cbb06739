"""Weights from other libraries as resnets checkpoints: torchvision and timm ResNets, and
akamaster/pytorch_resnet_cifar10's CIFAR ResNets.

Both libraries name the layers of their plain ResNets exactly as resnets does (``conv1``,
``bn1``, ``layer1..4`` with blocks ``convK``/``bnK``/``downsample.0|1``, ``fc``) and put the
bottleneck's stride on the 3x3 ("v1.5"), so their state dicts load into
``create_model("resnetNN", stride_in_1x1=False)`` unchanged and compute the same logits.

What differs is around the weights:

* torchvision: a ``.pth`` state dict, or a weights enum (``torchvision:resnet50``) whose
  metadata gives the class names and the eval transform (resize 256 or 232, crop 224).
* timm (``timm.create_model("resnet50")`` and its ``.tv``/``.a1``/... tags): the same keys.
  Only two spellings need mapping: a ``module.`` prefix (a DistributedDataParallel wrapper
  saved as is) and ``head.fc.`` for the classifier (timm's newer heads). timm's hub files are
  usually ``model.safetensors`` with a ``config.json`` beside them, whose ``pretrained_cfg``
  (crop_pct, interpolation, mean, std) gives the preprocessing. Variants with other layers
  (deep-stem ``resnet50d``, ``seresnet``, group norm, and ``resnetv2_*``, a pre-activation
  net with ``stem.``/``stages.`` names and projection shortcuts without BN) are refused with
  the keys that do not fit.

akamaster/pytorch_resnet_cifar10 (``resnet20.th`` ... ``resnet1202.th``): the paper's CIFAR
ResNets with option A, saved as ``{"state_dict": ...}`` with ``module.`` prefixes and
``linear.`` for the classifier, trained on inputs normalized with the ImageNet channel
mean/std. Its option-A shortcut puts the identity in the middle of the widened stream
(``planes // 4`` zero channels before and after); resnets' puts it first and the zeros
after. The two nets differ only by an order of the stream's channels, stage by stage, so the
import permutes the tensors that read or write the stream (`akamaster_to_resnets`) and the
result is the registered ``resnetN`` itself, with the same logits.

Every import ends in an `ImportedWeights` whose ``save`` writes a resnets checkpoint (kind
``"weights"``) with ``normalization`` (channel mean/std), ``image_size`` and
``preprocessing`` (resize, crop, interpolation), so `resnets predict` treats it like a
checkpoint of `resnets train`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import (
    HEAD,
    load_state_dict_for_model,
    read_state_dict,
    save_checkpoint,
)
from ..data.device_loader import Normalization
from ..data.folder import IMAGENET_MEAN, IMAGENET_STD
from ..errors import CheckpointError
from ..models import BasicBlock, ShortcutA, create_model, list_models
from ..models.zoo import IMAGENET_LAYERS

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImportedWeights",
    "akamaster_to_resnets",
    "import_akamaster",
    "import_timm",
    "import_torchvision",
    "imagenet_preprocessing",
    "infer_model_name",
    "load_state_dict_for_model",
    "read_state_dict",
]

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
# torchvision


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
        _check_model_name(model)  # before a download that could not be used
        state, info = _fetch_torchvision(name)
    else:
        state = read_state_dict(spec)
        info = {"source": {"format": "torchvision", "weights": str(Path(spec).resolve())}}
    state = _strip_prefix(state, "module.")
    pre = {"resize": 256, "crop": 224, "interpolation": "bilinear", **info.get("transform", {})}
    pre.update({k: v for k, v in (("resize", resize), ("crop", crop),
                                  ("interpolation", interpolation)) if v is not None})
    return _build(state, model=model, num_classes=num_classes, classes=classes,
                  categories=info.get("categories"), preprocessing=pre, source=info["source"])


def _fetch_torchvision(name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and metadata of torchvision weights ``builder[.TAG]`` (download or cache)."""
    import torch.hub
    from torchvision.models import get_model_weights

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


# --------------------------------------------------------------------------------------------
# timm


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
    state = _strip_prefix(state, "module.")
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
    return _build(state, model=model, num_classes=num_classes, classes=classes,
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


# --------------------------------------------------------------------------------------------
# akamaster/pytorch_resnet_cifar10

CIFAR_STAGES = ("layer1", "layer2", "layer3")


def import_akamaster(path: str | os.PathLike, *, model: str | None = None,
                     num_classes: int | None = None,
                     classes: list[str] | None = None) -> ImportedWeights:
    """A CIFAR ResNet of akamaster/pytorch_resnet_cifar10 (a ``.th`` torch file holding
    ``{"state_dict": ...}``, read with ``weights_only=True``) as an `ImportedWeights` of the
    registered ``resnetN`` (N = 6n + 2 from the blocks found; or ``model``).

    The checkpoint records the normalization those nets were trained with: the ImageNet
    channel mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). Classes default to
    CIFAR-10's for a 10-way head.
    """
    from ..data import CIFAR10_CLASSES

    path = Path(path).expanduser()
    state = _strip_prefix(read_state_dict(path), "module.")
    state = {("fc." + k[len("linear."):] if k.startswith("linear.") else k): v
             for k, v in state.items()}
    foreign = sorted(k for k in state if ".shortcut." in k
                     or not k.startswith(("conv1.", "bn1.", "fc.", *CIFAR_STAGES)))
    if foreign:
        raise CheckpointError(
            f"{path} holds tensors that akamaster's option-A CIFAR ResNets do not have "
            f"({', '.join(foreign[:6])}{' ...' if len(foreign) > 6 else ''}): projection "
            f"shortcuts (option B) or another architecture. Only the option-A nets "
            f"(resnet20/32/44/56/110/1202.th) can be imported with --from akamaster.")
    blocks = [len({k.split(".")[1] for k in state if k.startswith(stage + ".")})
              for stage in CIFAR_STAGES]
    if len(set(blocks)) != 1 or not blocks[0]:
        raise CheckpointError(f"{path}: blocks per stage {tuple(blocks)}; akamaster's CIFAR "
                              f"ResNets have the same number n >= 1 in layer1..layer3.")
    name = model or f"resnet{6 * blocks[0] + 2}"
    if name not in list_models("cifar"):
        raise CheckpointError(f"{path} holds {blocks[0]} blocks per stage (depth "
                              f"{6 * blocks[0] + 2}); {name!r} is no registered CIFAR ResNet "
                              f"({', '.join(list_models('cifar'))}).")
    head = state.get(f"{HEAD}.weight")
    n = num_classes or (len(classes) if classes else None) \
        or (int(head.shape[0]) if head is not None else 10)
    if classes is not None and len(classes) != n:
        raise CheckpointError(f"{len(classes)} class names were given for a classifier with "
                              f"{n} outputs. Give one name per output (or --num-classes).")
    net = create_model(name, num_classes=n)
    units = [b for stage in net.stages for b in stage]
    if len(net.stages) != 3 or any(not isinstance(b, BasicBlock) or b.unit != "original"
                                   or not b.residual
                                   or not isinstance(b.downsample, ShortcutA | None)
                                   for b in units):
        raise CheckpointError(f"model {name!r} is not a CIFAR ResNet with basic blocks and "
                              f"option A, the only nets akamaster's weights fit.")
    widths = [getattr(net, stage)[0].conv2.out_channels for stage in CIFAR_STAGES]
    state = akamaster_to_resnets(state, widths)
    dropped = load_state_dict_for_model(net, state, n)
    if classes is None:
        classes = (list(CIFAR10_CLASSES) if n == 10 and not dropped
                   else [f"class_{i}" for i in range(n)])
    norm = Normalization("channel_mean_std", list(IMAGENET_MEAN), list(IMAGENET_STD))
    meta = {"kind": "weights", "model": name, "model_kwargs": {"num_classes": n},
            "classes": list(classes), "normalization": norm.to_dict(),
            "image_size": [3, 32, 32],
            "source": {"format": "akamaster", "weights": str(path.resolve()),
                       "layout": "option-A zero channels on both sides of the identity; "
                                 "stream channels permuted to resnets' order"},
            "head_dropped": dropped}
    return ImportedWeights(net.eval(), meta, dropped)


def akamaster_stream_orders(widths: list[int]) -> list[torch.Tensor]:
    """For each stage, ``order[i]``: the akamaster channel that is resnets' channel ``i`` of
    the residual stream (the tensor carried by the shortcuts).

    Stage 1 is the stem's output in both. Entering a stage of width C from one of width
    C_prev, akamaster's shortcut places the subsampled stream at channels p .. p + C_prev
    (p = C // 4, zeros on both sides) and resnets' at 0 .. C_prev (zeros after), so resnets'
    channel i < C_prev is akamaster's p + order_prev[i], and resnets' zero channels are
    akamaster's zero channels, in order.
    """
    orders = [torch.arange(widths[0])]
    for prev, width in zip(widths, widths[1:], strict=False):
        pad = width // 4
        if prev + 2 * pad != width:
            raise CheckpointError(f"a stage widening {prev} -> {width} channels does not fit "
                                  f"akamaster's option A (planes // 4 zeros on each side).")
        zeros = torch.cat([torch.arange(pad), torch.arange(pad + prev, width)])
        orders.append(torch.cat([pad + orders[-1], zeros]))
    return orders


def akamaster_to_resnets(state: dict[str, torch.Tensor],
                         widths: list[int]) -> dict[str, torch.Tensor]:
    """akamaster's state dict (names already resnets': ``fc.``, no ``module.``) with every
    tensor that reads or writes the residual stream permuted into resnets' channel order:
    each block's ``conv1`` input channels, its ``conv2``/``bn2`` output channels and the
    ``fc`` input features. The net then computes the same logits."""
    orders = akamaster_stream_orders(widths)
    out = dict(state)
    for s, stage in enumerate(CIFAR_STAGES):
        names = sorted({k.split(".")[1] for k in state if k.startswith(stage + ".")}, key=int)
        for j in names:
            block = f"{stage}.{j}"
            # The first block of a stage reads the previous stage's stream.
            read = orders[s - 1] if j == names[0] and s > 0 else orders[s]
            out[f"{block}.conv1.weight"] = state[f"{block}.conv1.weight"][:, read]
            out[f"{block}.conv2.weight"] = state[f"{block}.conv2.weight"][orders[s]]
            for t in ("weight", "bias", "running_mean", "running_var"):
                if f"{block}.bn2.{t}" in state:
                    out[f"{block}.bn2.{t}"] = state[f"{block}.bn2.{t}"][orders[s]]
    if f"{HEAD}.weight" in state:
        out[f"{HEAD}.weight"] = state[f"{HEAD}.weight"][:, orders[-1]]
    return {k: v.contiguous() for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Shared


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _check_model_name(name: str) -> None:
    # torchvision's and timm's plain ResNets match resnets' option-B ImageNet nets, and only
    # them (not the option-A resnet18_a / resnet34_a).
    plain = [n for n in list_models("imagenet") if n.startswith("resnet") and n[6:].isdigit()]
    if name not in plain:
        raise CheckpointError(f"model {name!r} is not one of the ResNets whose torchvision / "
                              f"timm weights resnets can load ({', '.join(plain)}).")


def _imagenet_categories() -> list[str]:
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])  # no download needed


def _build(state: dict[str, torch.Tensor], *, model: str | None, num_classes: int | None,
           classes: list[str] | None, categories: list[str] | None,
           preprocessing: dict[str, Any], source: dict[str, Any]) -> ImportedWeights:
    """Model and record from a state dict in torchvision's layout. ``classes`` are the
    user's names (must fit the head); ``categories`` the weights' own (used when they fit)."""
    name = model or infer_model_name(state)
    _check_model_name(name)
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
            classes = _imagenet_categories() if n == 1000 else [f"class_{i}" for i in range(n)]
    meta = {"kind": "weights", "model": name, "model_kwargs": kwargs, "classes": list(classes),
            **imagenet_preprocessing(**preprocessing), "source": source,
            "head_dropped": dropped}
    return ImportedWeights(net.eval(), meta, dropped)
