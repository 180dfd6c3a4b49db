"""Array-library helpers: NumPy on the host, CuPy on the GPU, chosen from the array's type.

CuPy is optional: importing this module never fails without it.
"""
from __future__ import annotations

import contextlib
import warnings
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


def device_of(a: Any):
    """A context manager making a's GPU current (CuPy allocates on the current device);
    a no-op for NumPy arrays."""
    return a.device if is_cupy_array(a) else contextlib.nullcontext()


def same_place(a: Any, like: Any) -> bool:
    """True when a is on like's library (and, for CuPy, like's device)."""
    if is_cupy_array(a) != is_cupy_array(like):
        return False
    return not is_cupy_array(a) or a.device == like.device


def move_like(a: Any, like: Any) -> Any:
    """a on like's library and device (a itself when it is there already)."""
    if same_place(a, like):
        return a
    if not is_cupy_array(like):
        return to_numpy(a)
    with like.device:
        return _cupy.array(a)


class OnDevice:
    """A CuPy array in a pickle: its host copy and its device id, so that it comes back on
    that device. (CuPy's own pickling restores an array on whichever device is current:
    `ndarray.__reduce__` in cupy/_core/core.pyx is ``array, (self.get(),)``.)"""

    def __init__(self, host: np.ndarray, device: int):
        self.host, self.device = host, device


def to_portable(a: Any) -> Any:
    """What pickles for a (NumPy arrays and everything else as they are)."""
    return OnDevice(_cupy.asnumpy(a), a.device.id) if is_cupy_array(a) else a


def from_portable(a: Any) -> Any:
    """Inverse of `to_portable`. Without CuPy or without that device the array comes back as
    NumPy, with a warning: the layer moves it to the inputs' device on its next call."""
    if not isinstance(a, OnDevice):
        return a
    if gpu_available() and a.device < _cupy.cuda.runtime.getDeviceCount():
        with _cupy.cuda.Device(a.device):
            return _cupy.asarray(a.host)
    warnings.warn(f"lstm_gpu: an array pickled on GPU {a.device} is unpickled into NumPy "
                  "(CuPy or that GPU is not available here)", RuntimeWarning, stacklevel=3)
    return a.host
