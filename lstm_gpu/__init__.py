"""lstm_gpu: the Keras LSTM layer for NumPy and CuPy arrays.

NumPy input runs on the CPU (the reference path); CuPy input runs on the array's GPU,
on cuDNN when the call allows it and on our fused CUDA kernels otherwise. `Bidirectional`
wraps an LSTM as Keras 3 does.
"""
from __future__ import annotations

from .layer import LSTM
from .bidirectional import Bidirectional

__version__ = "0.1.0"
__all__ = ["LSTM", "Bidirectional", "__version__"]
