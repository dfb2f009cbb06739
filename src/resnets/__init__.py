"""resnets: deep residual networks (He et al., CVPR 2016), faithful and fast."""

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

__version__ = "0.1.0"

__all__ = ["ResNet", "count_macs", "count_params", "create_model", "get_weights", "list_models",
           "list_weights", "model_info", "__version__"]
