"""lstm_gpu's own ctypes binding to cuBLAS, for GEMMs that can be captured into CUDA graphs.

- `_loader`: finds and loads `libcublas.so.13` / `.12` (search order: `lstm_gpu.cuda._libload`).
- `_bindings`: enum values and the prototype table (restype/argtypes of every call).
- `api`: status -> `CublasError`, handles per (device, thread) with stream and workspace set
  by us, and `prepare_gemm` for the column-major plans of `lstm_gpu.cuda.gemm_plan`.

Importing this package loads nothing; `available()` / `load()` do.
"""
from __future__ import annotations

import ctypes
from typing import Optional

from ._loader import ENV_PATH, INSTALL_HINT, LOADER


def load() -> ctypes.CDLL:
    """The loaded cuBLAS library; raises `CublasNotAvailable` with the reasons."""
    return LOADER.load()


def loaded_path() -> Optional[str]:
    return LOADER.loaded_path()


def unavailable_reason() -> Optional[str]:
    """None when cuBLAS loads with every symbol lstm_gpu binds, else why not."""
    from . import api

    return api.BINDING.unavailable_reason()


def available() -> bool:
    return unavailable_reason() is None


__all__ = ["ENV_PATH", "INSTALL_HINT", "available", "load", "loaded_path", "unavailable_reason"]
