"""Using trained nets: prediction on image files, weights from torchvision and timm, export
to ONNX / TorchScript / torch.export, and detection backbones.

Submodules are imported on use so that `import resnets` does not pay for torchvision's
detection code or the ONNX exporter.
"""

import importlib

_SUBMODULES = ("backbone", "export", "predict", "weights")


def __getattr__(name: str):
    # ``resnets.serve.predict.Predictor`` works without importing the submodule first.
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
