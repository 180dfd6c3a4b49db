"""Compatibility layers for older Keras APIs (`lstm_gpu.compat.v1`)."""
from . import v1

__all__ = ["v1"]
