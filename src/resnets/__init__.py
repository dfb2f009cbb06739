"""resnets: deep residual networks (He et al., CVPR 2016), faithful and fast."""

import importlib

from .checkpoint import load_checkpoint
from .models import (
    ResNet,
    count_macs,
    count_params,
    create_model,
    get_weights,
    list_models,
    list_weights,
    model_info,
)
from .version import __version__

__all__ = ["ResNet", "count_macs", "count_params", "create_model", "get_weights", "list_models",
           "list_weights", "load_checkpoint", "model_info", "__version__"]

# Subpackages load on first use (``resnets.serve.predict.Predictor``), so that
# ``import resnets`` stays light.
_SUBPACKAGES = ("analysis", "data", "eval", "experiments", "models", "serve", "train")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
