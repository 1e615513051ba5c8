"""Serving with NVIDIA Triton Inference Server: a model repository from a sidecar (``serve``),
the python steps of its ensemble, and a client for ``bench --triton``."""
