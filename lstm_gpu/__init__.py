"""lstm_gpu: the Keras LSTM layer for NumPy and CuPy arrays."""
from __future__ import annotations

__version__ = "0.1.0"
