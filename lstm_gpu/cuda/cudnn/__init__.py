"""lstm_gpu's own ctypes binding to cuDNN 9's RNN API (CuPy 14 no longer wraps cuDNN).

- `_loader`: finds and loads `libcudnn.so.9` (see its docstring for the search order).
- `_bindings`: enum values and the prototype table (restype/argtypes of every call).
- `api`: status -> `CudnnError`, handles per (device, thread), descriptors, thin call wrappers.

Importing this package loads nothing; `available()` / `load()` do.
"""
from __future__ import annotations

from typing import Optional

from ._loader import ENV_DEBUG, ENV_PATH, INSTALL_HINT, load, loaded_path


def unavailable_reason() -> Optional[str]:
    """None when cuDNN 9 loads with every symbol lstm_gpu binds, else why not."""
    from . import api

    return api.BINDING.unavailable_reason()


def available() -> bool:
    return unavailable_reason() is None


__all__ = ["ENV_DEBUG", "ENV_PATH", "INSTALL_HINT", "available", "load", "loaded_path",
           "unavailable_reason"]
