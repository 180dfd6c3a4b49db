"""The environment section of `lstm-gpu-check`: what this machine runs, and what is missing.

Every probe is defensive: a missing library, a missing GPU or a failing query gives a fact
with no value and the reason, never an exception. The facts: lstm_gpu, Python, NumPy, CuPy,
CUDA (runtime, driver), the GPU in use, cuDNN (version, file, handle), cuBLAS (version,
file), NVRTC (version, file), whether the CUDA kernels compile (and how long it took), and
the environment variables lstm_gpu reads.
"""
from __future__ import annotations

import ctypes
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

ENV_VARIABLES = ("LSTM_GPU_KERNEL_LOOP", "LSTM_GPU_CPU_PATH", "LSTM_GPU_CUDNN_PATH",
                 "LSTM_GPU_CUBLAS_PATH", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")

# cublas_api.h (line 252 in nvidia-cublas 13.10): `cublasStatus_t cublasGetProperty(
# libraryPropertyType type, int* value)`; library_types.h: `typedef enum libraryPropertyType_t
# {MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL}`. It needs no handle, so no GPU either (CuPy 14.2
# does not wrap it: cupy_backends/cuda/libs/cublas.pyx has only getVersion(handle), line 616).
# tests/test_check_parts.py checks the prototype against the header and calls it.
CUBLAS_GET_PROPERTY = ("cublasGetProperty", ctypes.c_int, [ctypes.c_int,
                                                           ctypes.POINTER(ctypes.c_int)])
LIBRARY_PROPERTIES = (0, 1, 2)  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL


@dataclass
class Fact:
    """One line of the section: a value, or None and why it is missing."""

    label: str
    value: Optional[str]
    why: Optional[str] = None
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"value": self.value, "why": self.why, **self.details}


def _probe(label: str, fn: Callable[[], Fact]) -> Fact:
    try:
        return fn()
    except Exception as e:  # a probe must never stop the check
        return Fact(label, None, f"the probe failed: {type(e).__name__}: {e}")


def loaded_library(stem: str) -> Optional[str]:
    """The file of a shared library mapped into this process ("libcublas.so" ->
    ".../libcublas.so.13"), from /proc/self/maps (Linux), or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            maps = f.read()
    except OSError:
        return None
    found = re.findall(rf"(/\S*/{re.escape(stem)}[.\d]*)\s*$", maps, re.M)
    return sorted(set(found))[0] if found else None


def cublas_version(path: str) -> str:
    """"13.10.0" from the cuBLAS at `path` (already loaded: dlopen returns the same copy)."""
    name, restype, argtypes = CUBLAS_GET_PROPERTY
    fn = getattr(ctypes.CDLL(path), name)
    fn.restype, fn.argtypes = restype, argtypes
    parts = []
    for prop in LIBRARY_PROPERTIES:
        value = ctypes.c_int()
        status = fn(prop, ctypes.byref(value))
        if status != 0:
            raise RuntimeError(f"{name}({prop}) returned status {status}")
        parts.append(str(value.value))
    return ".".join(parts)


def _lstm_gpu() -> Fact:
    from .. import __version__

    location = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return Fact("lstm_gpu", f"{__version__} ({location})")


def _python() -> Fact:
    return Fact("Python", f"{platform.python_version()} ({sys.executable})")


def _numpy() -> Fact:
    return Fact("NumPy", np.__version__)


def _cpu_core() -> Fact:
    """The native CPU path's compiled core: the SIMD level it picked, its threads and BLAS."""
    from ..bench.env_info import distribution_version
    from ..paths import cpu_native

    why = cpu_native.unavailable_reason()
    if why is not None:
        return Fact("CPU core", None, why)
    blas = f"scipy-openblas32 {distribution_version('scipy-openblas32') or '?'}"
    return Fact("CPU core", f"{cpu_native.isa()}, {cpu_native.num_threads()} threads, {blas}",
                details={"isa": cpu_native.isa(), "threads": cpu_native.num_threads()})


def _cupy_missing() -> Optional[str]:
    """None when CuPy imports, else why not (the import error itself, if it fails)."""
    from .._xp import cupy_module

    if cupy_module() is not None:
        return None
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        return "not installed (pip install 'lstm-gpu[cuda13]' or '[cuda12]')"
    try:
        import cupy  # noqa: F401
    except Exception as e:
        return f"installed, but does not import: {type(e).__name__}: {e}"
    return "installed, but lstm_gpu could not import it"


def _cupy() -> Fact:
    why = _cupy_missing()
    if why:
        return Fact("CuPy", None, why)
    import cupy

    return Fact("CuPy", cupy.__version__)


def _cuda() -> Fact:
    why = _cupy_missing()
    if why:
        return Fact("CUDA", None, f"CuPy {why}")
    import cupy

    from ..bench.env_info import cuda_version_text, nvidia_driver

    rt = cupy.cuda.runtime
    runtime = cuda_version_text(rt.runtimeGetVersion())
    try:
        driver_api = cuda_version_text(rt.driverGetVersion())
    except Exception:
        driver_api = None
    kernel_driver = nvidia_driver()
    value = f"runtime {runtime}"
    if driver_api:
        value += f", driver API {driver_api}"
    if kernel_driver:
        value += f", NVIDIA driver {kernel_driver}"
    details = {"runtime": runtime, "driver_api": driver_api, "driver": kernel_driver}
    why = None if driver_api else "no CUDA driver found"
    return Fact("CUDA", value, why, details)


def _gpu() -> Fact:
    from .._xp import gpu_unavailable_reason

    why = gpu_unavailable_reason()
    if why:
        return Fact("GPU", None, why)
    import cupy

    from ..bench.env_info import gpu_info

    info = gpu_info() or {}
    count = cupy.cuda.runtime.getDeviceCount()
    value = (f"device {info.get('index')} of {count}: {info.get('name')}, compute capability "
             f"{info.get('compute_capability')}, {info.get('memory_gib')} GiB")
    return Fact("GPU", value, details={"device_count": count, **info})


def _cudnn() -> Fact:
    from ..cuda import cudnn

    why = cudnn.unavailable_reason()
    if why:
        return Fact("cuDNN", None, why)
    from ..bench.env_info import cudnn_version
    from .._xp import gpu_unavailable_reason

    path = cudnn.loaded_path()
    value = f"{cudnn_version()} ({path})"
    details: dict[str, Any] = {"version": cudnn_version(), "path": path}
    no_gpu = gpu_unavailable_reason()
    if no_gpu:
        details["handle"] = None
        return Fact("cuDNN", value, f"loads; no handle created: {no_gpu}", details)
    from ..cuda.cudnn import api

    ok, error = api.can_create_handle()
    details["handle"] = ok
    return Fact("cuDNN", value + ", handle created" if ok else value,
                None if ok else f"cudnnCreate failed: {error}", details)


def _cublas() -> Fact:
    why = _cupy_missing()
    if why:
        return Fact("cuBLAS", None, f"CuPy {why}")
    from cupy_backends.cuda.libs import cublas  # noqa: F401 - maps libcublas into the process

    path = loaded_library("libcublas.so")
    if path is None:
        return Fact("cuBLAS", None, "CuPy's cuBLAS module is loaded, but no libcublas.so is "
                                    "mapped (not Linux?)")
    version = cublas_version(path)
    return Fact("cuBLAS", f"{version} ({path})", details={"version": version, "path": path})


def _nvrtc() -> Fact:
    why = _cupy_missing()
    if why:
        return Fact("NVRTC", None, f"CuPy {why}")
    from cupy_backends.cuda.libs import nvrtc

    # (major, minor) from nvrtcVersion; no driver needed (cupy_backends/cuda/libs/nvrtc.pyx
    # line 56 in CuPy 14.2)
    version = ".".join(map(str, nvrtc.getVersion()))
    path = loaded_library("libnvrtc.so")
    return Fact("NVRTC", f"{version} ({path})" if path else version,
                details={"version": version, "path": path})


def _kernels() -> Fact:
    from .._xp import gpu_unavailable_reason

    why = gpu_unavailable_reason()
    if why:
        return Fact("CUDA kernels", None, f"not compiled here: {why} (they are compiled for "
                                          "the GPU's architecture when one is visible)")
    from ..cuda import kernels

    start = time.perf_counter()
    kernel_set = kernels.get_kernels()
    # cupy.RawModule compiles lazily; compile() builds and loads it now, for the current
    # device (CuPy 14.2 cupy/_core/raw.pyx: RawModule.compile line 421 -> _module line 409
    # -> _get_raw_module line 541, memoized per device -> compile_with_cache line 549).
    module = getattr(kernel_set, "module", None)
    if module is not None and hasattr(module, "compile"):
        module.compile()
    seconds = time.perf_counter() - start
    return Fact("CUDA kernels", f"compiled and loaded in {seconds:.2f} s (NVRTC; CuPy's kernel "
                                "cache may have served an earlier build)",
                details={"seconds": seconds})


def _variables() -> Fact:
    found = {k: os.environ[k] for k in ENV_VARIABLES if k in os.environ}
    text = ", ".join(f"{k}={v}" for k, v in found.items()) or "none set"
    return Fact("settings", text, details={"variables": found})


PROBES = (("lstm_gpu", _lstm_gpu), ("Python", _python), ("NumPy", _numpy),
          ("CPU core", _cpu_core), ("CuPy", _cupy),
          ("CUDA", _cuda), ("GPU", _gpu), ("cuDNN", _cudnn), ("cuBLAS", _cublas),
          ("NVRTC", _nvrtc), ("CUDA kernels", _kernels), ("settings", _variables))


def collect() -> list[Fact]:
    """Every fact, in the order printed. Run inside the GPU's device context (`--device`)."""
    return [_probe(label, fn) for label, fn in PROBES]
