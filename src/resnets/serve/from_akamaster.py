"""akamaster/pytorch_resnet_cifar10's CIFAR ResNets as resnets checkpoints.

``resnet20.th`` ... ``resnet1202.th``: the paper's CIFAR ResNets with option A, saved as
``{"state_dict": ...}`` with ``module.`` prefixes and ``linear.`` for the classifier, trained
on inputs normalized with the ImageNet channel mean/std. Its option-A shortcut puts the
identity in the middle of the widened stream (``planes // 4`` zero channels before and
after); resnets' puts it first and the zeros after. The two nets differ only by an order of
the stream's channels, stage by stage, so the import permutes the tensors that read or write
the stream (`akamaster_to_resnets`) and the result is the registered ``resnetN`` itself,
with the same logits.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoint import HEAD, load_state_dict_for_model, read_state_dict
from ..data import CIFAR10_CLASSES
from ..data.device_loader import Normalization
from ..data.folder import IMAGENET_MEAN, IMAGENET_STD
from ..errors import CheckpointError
from ..models import BasicBlock, ShortcutA, create_model, list_models
from .weights import ImportedWeights, strip_prefix

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
    path = Path(path).expanduser()
    state = strip_prefix(read_state_dict(path), "module.")
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

