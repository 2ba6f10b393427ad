"""cifar-onnx: CIFAR-10 image classification served from an int8 ONNX model."""

__version__ = "0.1.0"
