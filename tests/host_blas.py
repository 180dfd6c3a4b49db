"""SciPy's Fortran BLAS as the host stand-in for cuBLAS: runs a planned `GemmCall` on raw
pointers.

cuBLAS and the Fortran BLAS share one GEMM contract (column-major, ``op(A)`` flags, leading
dimensions, ``C = alpha op(A) op(B) + beta C``). ``scipy.linalg.cython_blas`` exports the
Fortran ``sgemm`` / ``dgemm`` as C function pointers (all arguments by reference), so the very
arguments `lstm_gpu.cuda.gemm_plan.plan_gemm` produces for cuBLAS run here on host memory: a
wrong op flag, leading dimension or pointer gives a wrong product (or writes outside the
output), exactly as it would on a GPU. A strided-batched call is a loop over the batch with
the cuBLAS offsets ``i * stride``.
"""
from __future__ import annotations

import ctypes
from ctypes import POINTER, byref, c_char_p, c_double, c_float, c_int, c_void_p

import numpy as np

from lstm_gpu.cuda.gemm_plan import OP_N, GemmCall

_SCALARS = {np.dtype(np.float32): ("sgemm", c_float), np.dtype(np.float64): ("dgemm", c_double)}
_FUNCTIONS: dict = {}


def _capsule_pointer(capsule) -> int:
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype, api.PyCapsule_GetName.argtypes = c_char_p, [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, c_char_p]
    return api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))


def fortran_gemm(dtype):
    """SciPy's ``?gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)``."""
    dtype = np.dtype(dtype)
    fn = _FUNCTIONS.get(dtype)
    if fn is None:
        from scipy.linalg import cython_blas

        name, scalar = _SCALARS[dtype]
        i, s, p = POINTER(c_int), POINTER(scalar), c_void_p
        proto = ctypes.CFUNCTYPE(None, c_char_p, c_char_p, i, i, i, s, p, i, p, i, s, p, i)
        fn = proto(_capsule_pointer(cython_blas.__pyx_capi__[name]))
        _FUNCTIONS[dtype] = fn
    return fn


def prepare(call: GemmCall):
    """A zero-argument function running `call` (like `cublas.api.prepare_gemm`, minus the
    handle)."""
    fn = fortran_gemm(call.dtype)
    _, scalar = _SCALARS[call.dtype]
    size = call.dtype.itemsize
    flag = {OP_N: b"N"}.get
    head = (flag(call.transa, b"T"), flag(call.transb, b"T"), byref(c_int(call.m)),
            byref(c_int(call.n)), byref(c_int(call.k)), byref(scalar(call.alpha)))
    lda, ldb, ldc = (byref(c_int(v)) for v in (call.lda, call.ldb, call.ldc))
    beta = byref(scalar(call.beta))
    batches = [(call.a_ptr + i * call.stride_a * size, call.b_ptr + i * call.stride_b * size,
                call.c_ptr + i * call.stride_c * size) for i in range(call.batch)]

    def run() -> None:
        for a, b, c in batches:
            fn(*head, a, lda, b, ldb, beta, c, ldc)

    return run
