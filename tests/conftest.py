"""Skip hardware tests cleanly: `gpu` needs a CUDA device, `cudnn` a working cuDNN handle."""
from __future__ import annotations

import functools
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/lstm_reference.py for tests/gpu/


@functools.lru_cache(maxsize=None)
def _gpu_skip_reason():
    from lstm_gpu._xp import cupy_module, gpu_available

    if cupy_module() is None:
        return "CuPy is not importable"
    if not gpu_available():
        return "no CUDA device visible to CuPy"
    return None


@functools.lru_cache(maxsize=None)
def _cudnn_skip_reason():
    gpu = _gpu_skip_reason()
    if gpu is not None:
        return gpu
    from lstm_gpu.cuda import cudnn

    why = cudnn.unavailable_reason()
    if why is not None:
        return f"cuDNN does not load: {why}"
    from lstm_gpu.cuda.cudnn import api

    ok, why = api.can_create_handle()
    return None if ok else f"cuDNN cannot create a handle: {why}"


def pytest_runtest_setup(item):
    if item.get_closest_marker("cudnn") is not None:
        reason = _cudnn_skip_reason()
        if reason is not None:
            pytest.skip(reason)
    elif item.get_closest_marker("gpu") is not None:
        reason = _gpu_skip_reason()
        if reason is not None:
            pytest.skip(reason)
