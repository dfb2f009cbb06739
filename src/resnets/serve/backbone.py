"""ResNets as detection / segmentation backbones: torchvision's FPN over resnets' stages.

torchvision's `BackboneWithFPN` runs the model's children in order up to the last stage it
returns (`IntermediateLayerGetter`), so the stem and ``layer1..4`` of a resnets model feed a
`FeaturePyramidNetwork` exactly as a torchvision ResNet does: the result plugs into
`FasterRCNN`, `MaskRCNN`, `RetinaNet` and friends. Pre-activation nets leave their last
stage un-normalized and apply one final BN-ReLU (``final_act``, the next child); that child
is returned in place of the last stage, so the pyramid sees the activated map.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..models import ResNet

__all__ = ["fpn_backbone", "stage_channels"]


def stage_channels(model: ResNet) -> dict[str, int]:
    """Output channels of each stage, e.g. ``{"layer1": 256, ..., "layer4": 2048}``."""
    out = {}
    for name, stage in zip(model.stage_names, model.stages, strict=True):
        last = stage[-1]
        out[name] = getattr(last, f"conv{last.num_convs}").out_channels
    return out


def fpn_backbone(model: ResNet, *, stages: Sequence[str] | None = None,
                 out_channels: int = 256, extra_blocks: nn.Module | None = None
                 ) -> BackboneWithFPN:
    """A `BackboneWithFPN` over ``stages`` of ``model`` (default: all, ``layer1..layer4``).

    Feature maps are named ``"0"``, ``"1"``, ... in stage order, plus ``"pool"`` from the
    default ``extra_blocks`` (`LastLevelMaxPool`), the names torchvision's detection heads
    expect. The avgpool and fc of ``model`` are not part of the backbone. BN layers stay
    trainable `BatchNorm2d`; freeze or swap them (``FrozenBatchNorm2d``) before training
    with small batches.
    """
    channels = stage_channels(model)
    stages = list(stages) if stages is not None else list(model.stage_names)
    unknown = [s for s in stages if s not in channels]
    if unknown or not stages:
        raise ValueError(f"stages {unknown or stages} are not stages of this model "
                         f"({', '.join(model.stage_names)}).")
    stages = sorted(stages, key=model.stage_names.index)
    return_layers = {name: str(i) for i, name in enumerate(stages)}
    if stages[-1] == model.stage_names[-1] and not isinstance(model.final_act, nn.Identity):
        return_layers["final_act"] = return_layers.pop(stages[-1])
    return BackboneWithFPN(model, return_layers=return_layers,
                           in_channels_list=[channels[s] for s in stages],
                           out_channels=out_channels,
                           extra_blocks=extra_blocks if extra_blocks is not None
                           else LastLevelMaxPool())
