"""The demo corner: a synthetic dataset and a minimal YOLOv5 training loop.

Training is not the product. It exists so that parity and calibration can be shown on a model
that detects something (random weights prove little), trained here, on a CPU, from nothing.
"""
