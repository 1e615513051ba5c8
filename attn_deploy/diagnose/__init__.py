"""Per-block comparison over any runner (ONNX Runtime, TensorRT): which layer breaks a
candidate. Uses engines and parity; neither uses it (the CLI joins them)."""
