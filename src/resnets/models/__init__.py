"""The paper's networks: blocks, the `ResNet` class, the registry and complexity counters."""

from . import zoo  # noqa: F401  (registers every builder)
from .blocks import (
    SHORTCUTS,
    UNITS,
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ShortcutA,
)
from .complexity import count_macs, count_params
from .pretrained import UnknownWeightsError, Weights, get_weights, list_weights
from .registry import ModelInfo, UnknownModelError, create_model, list_models, model_info
from .resnet import ResNet

__all__ = [
    "SHORTCUTS", "UNITS", "BasicBlock", "Bottleneck", "PreActBasicBlock", "PreActBottleneck",
    "ShortcutA", "ResNet", "ModelInfo",
    "UnknownModelError", "count_macs", "count_params", "create_model", "list_models", "model_info",
    "UnknownWeightsError", "Weights", "get_weights", "list_weights",
]
