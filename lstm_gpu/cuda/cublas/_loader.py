"""Find and load cuBLAS (`libcublas.so.13` or `.12`) with ctypes, through `cuda._libload`.

Search order: see `_libload` (``LSTM_GPU_CUBLAS_PATH``, a copy already loaded in this process
(CuPy's own cuBLAS binding links `libcublas.so.<major>`), the wheels' ``site-packages/nvidia/
cu13/lib`` (``nvidia-cublas``, CUDA 13; the cuDNN cu13 wheel depends on it) and
``nvidia/cublas/lib`` (``nvidia-cublas-cu12``), ``cuda.pathfinder``, the system loader).

Only the major version of CuPy's CUDA runtime is accepted when CuPy is importable: two cuBLAS
majors in one process would bring two CUDA runtimes. The version is read with
``cublasGetProperty`` (no GPU needed) as ``major * 10000 + minor * 100 + patch``, the
``CUBLAS_VERSION`` formula of ``cublas_api.h``.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Optional

from ...errors import CublasNotAvailable
from .._libload import LibraryLoader, LibrarySpec

ENV_PATH = "LSTM_GPU_CUBLAS_PATH"
SUPPORTED_MAJORS = (13, 12)
# libraryPropertyType (library_types.h, not shipped in the wheel; also CuPy's cusolver.pyx):
MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL = 0, 1, 2

INSTALL_HINT = (
    "install cuBLAS with `pip install lstm-gpu[cuda13]` (nvidia-cublas) or "
    "`pip install lstm-gpu[cuda12]` (nvidia-cublas-cu12), or point "
    f"{ENV_PATH} at libcublas.so.<major>"
)


def cupy_cuda_major() -> Optional[int]:
    """The CUDA major version CuPy was built for (None without CuPy)."""
    from ..._xp import cupy_module

    cp = cupy_module()
    if cp is None:
        return None
    try:
        return int(cp.cuda.runtime.runtimeGetVersion()) // 1000
    except Exception:  # a broken CUDA install
        return None


def _soname(major: int) -> str:
    if sys.platform == "win32":  # pragma: no cover - not exercised in CI
        return f"cublas64_{major}.dll"
    return f"libcublas.so.{major}"


def sonames() -> tuple[str, ...]:
    major = cupy_cuda_major()
    majors = (major,) if major in SUPPORTED_MAJORS else SUPPORTED_MAJORS
    return tuple(_soname(m) for m in majors)


def read_version(lib: ctypes.CDLL) -> tuple[int, int, int]:
    fn = lib.cublasGetProperty
    fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    parts = []
    for prop in (MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL):
        value = ctypes.c_int()
        status = fn(prop, ctypes.byref(value))
        if status != 0:
            raise OSError(f"cublasGetProperty({prop}) returned status {status}")
        parts.append(value.value)
    return tuple(parts)  # type: ignore[return-value]


def _check_version(lib: ctypes.CDLL) -> int:
    major, minor, patch = read_version(lib)
    wanted = cupy_cuda_major()
    if major not in SUPPORTED_MAJORS or (wanted is not None and major != wanted):
        need = f"{wanted}.x (CuPy's CUDA)" if wanted else " or ".join(map(str, SUPPORTED_MAJORS))
        raise OSError(f"found cuBLAS {major}.{minor}.{patch}, lstm_gpu needs cuBLAS {need}")
    return major * 10000 + minor * 100 + patch


LOADER = LibraryLoader(LibrarySpec(
    name="cublas", label="cuBLAS", env_path=ENV_PATH, sonames=sonames,
    wheel_packages=("cu13", "cublas"), pathfinder_name="cublas", check=_check_version,
    install_hint=INSTALL_HINT, error=CublasNotAvailable))
