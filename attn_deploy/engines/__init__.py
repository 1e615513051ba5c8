"""Engines: one runner interface over PyTorch, ONNX Runtime and TensorRT; build and bench."""
