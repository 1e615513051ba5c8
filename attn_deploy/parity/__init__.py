"""Parity: tensor comparison, NMS, detection matching, mAP, reports."""
