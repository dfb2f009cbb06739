"""Using trained nets: prediction on image files, weights from torchvision, timm and
akamaster (`weights` and one `from_*` module per source), export to ONNX / TorchScript /
torch.export, and detection backbones.

Submodules are imported on use so that `import resnets` does not pay for torchvision's
detection code or the ONNX exporter.
"""

import importlib

_SUBMODULES = ("backbone", "export", "from_akamaster", "from_timm", "from_torchvision",
               "predict", "weights")


def __getattr__(name: str):
    # ``resnets.serve.predict.Predictor`` works without importing the submodule first.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
