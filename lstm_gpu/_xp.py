"""Array-library helpers: NumPy on the host, CuPy on the GPU, chosen from the array's type.

CuPy is optional: importing this module never fails without it.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

try:  # pragma: no cover - depends on the machine
    import cupy as _cupy
except Exception:  # ImportError, or a broken CUDA install
    _cupy = None


def cupy_module() -> ModuleType | None:
    """The `cupy` module, or None when CuPy is not importable."""
    return _cupy


def is_cupy_array(a: Any) -> bool:
    return _cupy is not None and isinstance(a, _cupy.ndarray)


def array_module(a: Any) -> ModuleType:
    """`cupy` for a CuPy array, else `numpy`."""
    return _cupy if is_cupy_array(a) else np


def to_numpy(a: Any) -> np.ndarray:
    """A NumPy copy (or view) of a NumPy or CuPy array."""
    if is_cupy_array(a):
        return _cupy.asnumpy(a)
    return np.asarray(a)


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return gpu_unavailable_reason() is None


def gpu_unavailable_reason() -> str | None:
    """None when CuPy imports and sees a CUDA device, else why not, in words."""
    if _cupy is None:
        return "CuPy is not installed (pip install 'lstm-gpu[cuda12]' or '[cuda13]')"
    try:
        count = _cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, or a broken one
        return f"no CUDA device visible to CuPy ({type(e).__name__}: {e})"
    return None if count > 0 else "no CUDA device visible to CuPy"
