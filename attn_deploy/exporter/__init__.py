"""Export: PyTorch -> ONNX, graph clean-up, the TensorRT-compatibility lint, FP16 conversion."""
