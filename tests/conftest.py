"""Markers that need hardware or optional packages skip cleanly, saying why.

- gpu: a CUDA device visible to CuPy.
- cudnn: a CUDA device and cuDNN 9 that loads and creates a handle.
- keras: Keras 3 importable (the torch backend is selected here if none is set).

The `cpu_path` fixture runs a test once per CPU path ("numpy", the reference, and "native",
the compiled core), by setting LSTM_GPU_CPU_PATH; a suite opts in with
``pytestmark = pytest.mark.usefixtures("cpu_path")``. The native run skips, saying why,
where the core is not built.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sys

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.dirname(__file__))  # tests/lstm_reference.py for tests/gpu/


@functools.lru_cache(maxsize=None)
def _gpu_reason():
    from lstm_gpu._xp import gpu_unavailable_reason

    return gpu_unavailable_reason()


@functools.lru_cache(maxsize=None)
def _cudnn_reason():
    gpu = _gpu_reason()
    if gpu is not None:
        return gpu
    from lstm_gpu.cuda import cudnn

    why = cudnn.unavailable_reason()
    if why is not None:
        return f"cuDNN does not load: {why}"
    from lstm_gpu.cuda.cudnn import api

    ok, why = api.can_create_handle()
    return None if ok else f"cuDNN cannot create a handle: {why}"


@functools.lru_cache(maxsize=None)
def _keras_reason():
    if importlib.util.find_spec("keras") is None:
        return "Keras 3 is not installed (pip install keras torch)"
    try:
        import keras
    except Exception as exc:  # a broken backend install
        return f"Keras does not import: {exc}"
    if int(keras.__version__.split(".")[0]) < 3:
        return f"Keras {keras.__version__} is not Keras 3"
    return None


_CHECKS = {"cudnn": _cudnn_reason, "gpu": _gpu_reason, "keras": _keras_reason}


@pytest.fixture(params=["numpy", "native"])
def cpu_path(request, monkeypatch):
    """The CPU path NumPy calls run in this test: "numpy" or "native" (LSTM_GPU_CPU_PATH)."""
    if request.param == "native":
        from lstm_gpu.paths import cpu_native

        why = cpu_native.unavailable_reason()
        if why is not None:
            pytest.skip(f"[native] {why}")
    monkeypatch.setenv("LSTM_GPU_CPU_PATH", request.param)
    return request.param


def pytest_runtest_setup(item):
    for marker, check in _CHECKS.items():
        if item.get_closest_marker(marker) is not None:
            reason = check()
            if reason is not None:
                pytest.skip(f"[{marker}] {reason}")
