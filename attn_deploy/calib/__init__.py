"""Precision: FP16 and INT8 (Q/DQ) ONNX from a float32 export, calibrated on real images and
kept within an accuracy budget by measuring which blocks cannot take INT8."""
