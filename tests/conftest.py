"""Markers that need hardware or optional packages skip cleanly, saying why.

- gpu: a CUDA device visible to CuPy.
- cudnn: a CUDA device and cuDNN 9 that loads and creates a handle.
- keras: Keras 3 importable (the torch backend is selected here if none is set).
"""
import importlib.util
import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")


def _gpu_reason():
    from lstm_gpu._xp import cupy_module, gpu_available

    if cupy_module() is None:
        return "CuPy is not installed (pip install lstm-gpu[cuda12] or [cuda13])"
    if not gpu_available():
        return "no CUDA device visible to CuPy"
    return None


def _cudnn_reason():
    reason = _gpu_reason()
    if reason:
        return reason
    try:
        from lstm_gpu.dispatch import cudnn_available_reason
    except ImportError:
        return "the cuDNN binding is not part of this build"
    return cudnn_available_reason()


def _keras_reason():
    if importlib.util.find_spec("keras") is None:
        return "Keras 3 is not installed (pip install lstm-gpu[keras] torch)"
    try:
        import keras

        if int(keras.__version__.split(".")[0]) < 3:
            return f"Keras {keras.__version__} is not Keras 3"
    except Exception as exc:  # a broken backend install
        return f"Keras does not import: {exc}"
    return None


_CHECKS = {"gpu": _gpu_reason, "cudnn": _cudnn_reason, "keras": _keras_reason}


def pytest_collection_modifyitems(config, items):
    reasons = {}
    for item in items:
        for marker, check in _CHECKS.items():
            if item.get_closest_marker(marker) is None:
                continue
            if marker not in reasons:
                reasons[marker] = check()
            if reasons[marker]:
                item.add_marker(pytest.mark.skip(reason=f"[{marker}] {reasons[marker]}"))
