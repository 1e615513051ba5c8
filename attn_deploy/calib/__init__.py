"""Calibration: image data, INT8 Q/DQ graphs, calibrators and caches, precision sensitivity."""
