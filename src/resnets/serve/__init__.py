"""Using trained nets: prediction on image files, weights from torchvision and timm, export
to ONNX / TorchScript / torch.export, and detection backbones.

Submodules are imported on use so that `import resnets` does not pay for torchvision's
detection code or the ONNX exporter.
"""
