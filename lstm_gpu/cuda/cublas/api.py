"""A thin, checked layer over cuBLAS: status mapping, handles, and planned GEMMs.

Why our own binding: CuPy refuses every cuBLAS call while a stream is capturing (CuPy 14.2,
``cupy_backends/cuda/libs/cublas.pyx`` line 648, in ``setStream``: ``if runtime.
streamIsCapturing(stream): raise NotImplementedError('calling cuBLAS API during stream
capture is currently unsupported')``), and every CuPy GEMM (``sgemm`` line 1077, ``gemmEx``
line 1639, ...) first calls ``_setStream`` (line 666) with the current stream. So the kernel
path's time loop could never be captured into a CUDA graph through CuPy (CuPy issue 6290).

What the cuBLAS documentation (docs.nvidia.com/cuda/cublas) says that we rely on:
- ``cublasSetStream`` (section "cublasSetStream()") "unconditionally resets the cuBLAS
  library workspace back to the default workspace pool", so `Handle.bind` calls
  ``cublasSetWorkspace`` after every stream change, as PyTorch's ``getCurrentCUDABlasHandle``
  does (``aten/src/ATen/cuda/CublasHandlePool.cpp``). ``cublasSetWorkspace``: the buffer must
  be 256-byte aligned (CuPy's pool hands out 512-byte units, ``cupy/cuda/memory.pyx`` line
  40); the recommended size is 4 MiB, 32 MiB on Hopper and later
  (`recommended_workspace_bytes`).
- "CUDA Graphs Support": cuBLAS routines can be stream-captured; with
  ``CUBLAS_POINTER_MODE_HOST`` the alpha/beta values are captured into the graph; a user
  workspace from ``cublasSetWorkspace`` keeps cuBLAS from stream-ordered allocations inside
  the graph. A captured GEMM keeps the workspace address: the buffer must outlive every graph
  recorded with it (the kernel path gives each plan its own).
- ``cublasSetMathMode``: ``CUBLAS_DEFAULT_MATH`` with the typed ``cublasSgemm``/``Dgemm``
  computes float32 in FP32; TF32 needs ``CUBLAS_TF32_TENSOR_OP_MATH`` (``cublas_api.h``:
  "allow accelerating single precision routines using TF32 tensor cores"). Handles are
  created with DEFAULT_MATH and host pointer mode, set explicitly. (CuPy's own GEMMs outside
  the loop use ``CUBLAS_COMPUTE_32F`` unless ``CUPY_TF32=1``: ``cupy/_core/
  _routines_linalg.pyx`` line 454.)

Handles: one per (device, thread), created lazily by `get_handle()` (a cuBLAS handle binds to
the device current at creation and must not be used by two threads at once) and destroyed by
`weakref.finalize` (not at interpreter exit, when the CUDA context may already be gone).
"""
from __future__ import annotations

import ctypes
import threading
import weakref
from ctypes import byref, c_int, c_void_p
from typing import Callable, Optional

import numpy as np

from ...errors import CublasError, CublasNotAvailable
from .. import gemm_plan
from .._libload import Binding
from . import _bindings as B
from . import _loader

BINDING = Binding(_loader.LOADER, B.PROTOTYPES, B.STATUS_NAMES, "cublasGetStatusName")


def functions():
    """The bound prototypes; raises `CublasNotAvailable` when cuBLAS does not load."""
    return BINDING.functions()


def version() -> int:
    """major * 10000 + minor * 100 + patch, e.g. 131000 for 13.10.0."""
    functions()
    return int(_loader.LOADER.version())


def status_name(status: int) -> str:
    """`CUBLAS_STATUS_...` for a status code (our table, else cuBLAS's own name)."""
    return BINDING.status_name(status)


def status_message(status: int) -> str:
    try:
        return (functions().cublasGetStatusString(int(status)) or b"").decode(errors="replace")
    except CublasNotAvailable:
        return ""


def check_status(status: int, call: str = "") -> None:
    """Raise `CublasError` (with cuBLAS's status name and text) for a non-zero status."""
    if status != 0:
        raise CublasError(int(status), status_name(status), status_message(status), call)


def _call(name: str, *args) -> None:
    check_status(getattr(functions(), name)(*args), name)


def recommended_workspace_bytes(compute_capability: int) -> int:
    """cublasSetWorkspace's recommended size: 32 MiB from Hopper (sm_90) on, else 4 MiB."""
    return (32 if compute_capability >= 90 else 4) << 20


def _destroy(ptr: int) -> None:
    fns = BINDING.bound()
    if fns is not None and ptr:
        fns.cublasDestroy_v2(c_void_p(ptr))  # status ignored: nothing to do about it


class Handle:
    """A cuBLAS handle on the device current at creation: DEFAULT_MATH, host pointer mode."""

    def __init__(self, device_id: int = -1) -> None:
        ptr = c_void_p()
        _call("cublasCreate_v2", byref(ptr))
        self._ptr = ptr.value
        self._finalizer = weakref.finalize(self, _destroy, self._ptr)
        self._finalizer.atexit = False
        self.device_id = device_id
        self._bound: Optional[tuple[int, int, int]] = None
        _call("cublasSetMathMode", self._ptr, B.DEFAULT_MATH)
        _call("cublasSetPointerMode_v2", self._ptr, B.POINTER_MODE_HOST)

    @property
    def ptr(self) -> int:
        if not self._finalizer.alive:
            raise ValueError("the cuBLAS handle is closed")
        return self._ptr

    def close(self) -> None:
        """Destroy the handle now; idempotent."""
        self._finalizer()

    def bind(self, stream_ptr: int, workspace_ptr: int, workspace_bytes: int) -> None:
        """Route the next calls to `stream_ptr` (0: legacy default stream) with the given
        workspace. cublasSetStream resets the workspace, so both are always set together."""
        key = (stream_ptr, workspace_ptr, workspace_bytes)
        if key != self._bound:
            _call("cublasSetStream_v2", self.ptr, c_void_p(stream_ptr or None))
            _call("cublasSetWorkspace_v2", self.ptr, c_void_p(workspace_ptr or None),
                  workspace_bytes)
            self._bound = key

    def math_mode(self) -> int:
        out = c_int()
        _call("cublasGetMathMode", self.ptr, byref(out))
        return out.value

    def stream(self) -> int:
        out = c_void_p()
        _call("cublasGetStream_v2", self.ptr, byref(out))
        return out.value or 0


_local = threading.local()


def get_handle(device_id: Optional[int] = None) -> Handle:
    """This thread's handle for `device_id` (default: CuPy's current device)."""
    from ..._xp import cupy_module

    cp = cupy_module()
    if cp is None:
        raise CublasNotAvailable("CuPy is not importable; " + _loader.INSTALL_HINT)
    if device_id is None:
        device_id = int(cp.cuda.runtime.getDevice())
    handles = getattr(_local, "handles", None)
    if handles is None:
        handles = _local.handles = {}
    handle = handles.get(device_id)
    if handle is None:
        with cp.cuda.Device(device_id):
            handle = Handle(device_id)
        handles[device_id] = handle
    return handle


_GEMMS = {  # dtype -> (plain, strided batched, ctypes scalar)
    np.dtype(np.float32): ("cublasSgemm_v2", "cublasSgemmStridedBatched", ctypes.c_float),
    np.dtype(np.float64): ("cublasDgemm_v2", "cublasDgemmStridedBatched", ctypes.c_double),
}


def prepare_gemm(call: gemm_plan.GemmCall) -> Callable[[int], None]:
    """A function ``run(handle_ptr)`` issuing `call` on the handle's bound stream.

    Every argument is converted to its ctypes value once, here: eager time loops call the
    result once per step.
    """
    plain, strided, scalar = _GEMMS[call.dtype]
    fns = functions()
    alpha, beta = scalar(call.alpha), scalar(call.beta)
    head = (c_int(call.transa), c_int(call.transb), c_int(call.m), c_int(call.n),
            c_int(call.k), byref(alpha))
    a, b, c = c_void_p(call.a_ptr), c_void_p(call.b_ptr), c_void_p(call.c_ptr)
    if call.batch == 1:
        name = plain
        tail = head + (a, c_int(call.lda), b, c_int(call.ldb), byref(beta), c,
                       c_int(call.ldc))
    else:
        name = strided
        ll = ctypes.c_longlong
        tail = head + (a, c_int(call.lda), ll(call.stride_a), b, c_int(call.ldb),
                       ll(call.stride_b), byref(beta), c, c_int(call.ldc), ll(call.stride_c),
                       c_int(call.batch))
    fn = getattr(fns, name)

    def run(handle_ptr: int) -> None:
        status = fn(handle_ptr, *tail)
        if status:
            check_status(status, name)

    return run  # byref() keeps alpha and beta alive as long as `tail`
