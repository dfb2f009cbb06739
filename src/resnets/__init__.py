"""resnets: deep residual networks (He et al., CVPR 2016), faithful and fast."""

from .models import ResNet, count_macs, count_params, create_model, list_models, model_info

__version__ = "0.1.0"

__all__ = ["ResNet", "count_macs", "count_params", "create_model", "list_models", "model_info",
           "__version__"]
