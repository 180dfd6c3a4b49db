"""cuBLAS constants and the ctypes prototype of every function lstm_gpu calls.

Values and prototypes follow ``cublas_api.h`` (a test compares them with the header shipped in
the wheel). The ``_v2`` names are the real symbols behind ``cublas_v2.h``'s macros
(``#define cublasSgemm cublasSgemm_v2``); the strided-batched GEMMs have no ``_v2`` suffix.
"""
from __future__ import annotations

from ctypes import POINTER, c_char_p, c_double, c_float, c_int, c_longlong, c_size_t, c_void_p

# cublasStatus_t
STATUS_NAMES: dict[int, str] = {
    0: "CUBLAS_STATUS_SUCCESS",
    1: "CUBLAS_STATUS_NOT_INITIALIZED",
    3: "CUBLAS_STATUS_ALLOC_FAILED",
    7: "CUBLAS_STATUS_INVALID_VALUE",
    8: "CUBLAS_STATUS_ARCH_MISMATCH",
    11: "CUBLAS_STATUS_MAPPING_ERROR",
    13: "CUBLAS_STATUS_EXECUTION_FAILED",
    14: "CUBLAS_STATUS_INTERNAL_ERROR",
    15: "CUBLAS_STATUS_NOT_SUPPORTED",
    16: "CUBLAS_STATUS_LICENSE_ERROR",
}
# cublasOperation_t
OP_N, OP_T = 0, 1
# cublasPointerMode_t
POINTER_MODE_HOST, POINTER_MODE_DEVICE = 0, 1
# cublasMath_t. DEFAULT_MATH keeps float32 in FP32: TF32 needs TF32_TENSOR_OP_MATH (or a
# *_FAST_TF32 compute type, which the typed S/Dgemm calls never take).
DEFAULT_MATH, PEDANTIC_MATH, TF32_TENSOR_OP_MATH = 0, 2, 3

_s = c_int  # cublasStatus_t
_p = c_void_p  # handles, streams, device pointers
_fp, _dp = POINTER(c_float), POINTER(c_double)

_GEMM = [_p, c_int, c_int, c_int, c_int, c_int]  # handle, transa, transb, m, n, k


def _gemm(scalar) -> list:
    return _GEMM + [scalar, _p, c_int, _p, c_int, scalar, _p, c_int]


def _gemm_strided(scalar) -> list:
    return _GEMM + [scalar, _p, c_int, c_longlong, _p, c_int, c_longlong, scalar, _p, c_int,
                    c_longlong, c_int]


# name -> (restype, argtypes)
PROTOTYPES: dict[str, tuple] = {
    "cublasCreate_v2": (_s, [POINTER(c_void_p)]),
    "cublasDestroy_v2": (_s, [_p]),
    "cublasGetVersion_v2": (_s, [_p, POINTER(c_int)]),
    "cublasGetProperty": (_s, [c_int, POINTER(c_int)]),
    "cublasGetStatusName": (c_char_p, [c_int]),
    "cublasGetStatusString": (c_char_p, [c_int]),
    "cublasSetStream_v2": (_s, [_p, _p]),
    "cublasGetStream_v2": (_s, [_p, POINTER(c_void_p)]),
    "cublasSetWorkspace_v2": (_s, [_p, _p, c_size_t]),
    "cublasSetMathMode": (_s, [_p, c_int]),
    "cublasGetMathMode": (_s, [_p, POINTER(c_int)]),
    "cublasSetPointerMode_v2": (_s, [_p, c_int]),
    "cublasGetPointerMode_v2": (_s, [_p, POINTER(c_int)]),
    "cublasSgemm_v2": (_s, _gemm(_fp)),
    "cublasDgemm_v2": (_s, _gemm(_dp)),
    "cublasSgemmStridedBatched": (_s, _gemm_strided(_fp)),
    "cublasDgemmStridedBatched": (_s, _gemm_strided(_dp)),
}
