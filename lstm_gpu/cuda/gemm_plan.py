"""Row-major GEMM operands -> BLAS's column-major arguments (one pure function, `plan_gemm`).

cuBLAS, like the Fortran BLAS that SciPy wraps, computes ``C = alpha op(A) op(B) + beta C`` on
column-major matrices: element (i, j) of an (r x c) matrix with leading dimension ``ld`` sits
at ``i + j * ld``, and ``ld >= max(1, r)``. NumPy and CuPy arrays are described by a pointer
and byte strides instead. A 2-D view with element strides (s0, s1) is, read column-major:

    s1 == 1 ("row layout"):  the (cols x rows) matrix X^T with ld = s0
    s0 == 1 ("col layout"):  the (rows x cols) matrix X   with ld = s1

(a dimension of length 1 has no stride to respect, so both may apply). For ``out = a @ b``:

    out in col layout:  C = A B      cuBLAS (m, n, k) = (M, N, K), first operand a, then b
    out in row layout:  C^T = B^T A^T  cuBLAS (m, n, k) = (N, M, K), first operand b, then a

and each operand gets ``OP_N`` when its stored matrix already is the factor the product
needs, ``OP_T`` when it is its transpose. A leading batch dimension maps to the strided-
batched GEMM (an operand without one, or with length 1, is broadcast with batch stride 0).

Refused with `GemmLayoutError` (a ValueError): neither stride of a matrix is 1 (e.g.
``x[::2, ::2]``), negative or misaligned strides, an ld below the BLAS minimum (overlapping
rows or columns, e.g. a broadcast stride 0), an output whose batches overlap, dtype or shape
mismatches, and sizes beyond BLAS's 32-bit ``int``.

The planner never reads memory; `operand()` takes the pointer, shape and strides of a NumPy
or CuPy array. tests/test_gemm_plan.py runs every plan through SciPy's Fortran BLAS on the raw
buffers; the CUDA path hands the same plans to cuBLAS (`lstm_gpu.cuda.cublas.api`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._xp import is_cupy_array

OP_N, OP_T = 0, 1  # cublasOperation_t and the Fortran BLAS 'N' / 'T'
INT_MAX = 2 ** 31 - 1
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class GemmLayoutError(ValueError):
    """The operands cannot be given to a BLAS GEMM without a copy."""


@dataclass(frozen=True)
class Operand:
    """A strided array: address of element 0, shape, strides in bytes, dtype."""

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype


def address(a: Any) -> int:
    """The address of a NumPy or CuPy array's first element (its view's offset included):
    ``ndarray.ctypes.data`` for NumPy; for CuPy ``ndarray.data.ptr`` (CuPy 14.2: ``data`` is a
    ``MemoryPointer``, ``cupy/_core/core.pxd`` line 22, whose ``ptr`` is the allocation's
    address plus the view's offset, ``cupy/cuda/memory.pyx`` line 481)."""
    return int(a.data.ptr if is_cupy_array(a) else a.ctypes.data)


def operand(a: Any) -> Operand:
    """The `Operand` of a NumPy or CuPy array."""
    return Operand(address(a), tuple(int(n) for n in a.shape),
                   tuple(int(s) for s in a.strides), np.dtype(a.dtype))


@dataclass(frozen=True)
class GemmCall:
    """Column-major GEMM arguments: ``C = alpha op(A) op(B) + beta C`` over `batch` matrices,
    the i-th at element offsets ``i * stride_*`` (batch 1: a plain GEMM)."""

    dtype: np.dtype
    transa: int
    transb: int
    m: int
    n: int
    k: int
    alpha: float
    a_ptr: int
    lda: int
    stride_a: int
    b_ptr: int
    ldb: int
    stride_b: int
    beta: float
    c_ptr: int
    ldc: int
    stride_c: int
    batch: int


@dataclass(frozen=True)
class _Matrix:
    ptr: int
    rows: int
    cols: int
    s0: int  # element strides
    s1: int
    batch: int
    batch_stride: int


def _matrix(name: str, x: Operand, itemsize: int, batch: int) -> _Matrix:
    if len(x.shape) not in (2, 3):
        raise GemmLayoutError(f"{name} must be 2-D or 3-D (batched), got shape {x.shape}")
    strides = []
    for s in x.strides:
        if s < 0 or s % itemsize:
            raise GemmLayoutError(f"{name} has strides {x.strides}: BLAS needs non-negative "
                                  f"multiples of the item size {itemsize}")
        strides.append(s // itemsize)
    if len(x.shape) == 2:
        return _Matrix(x.ptr, x.shape[0], x.shape[1], strides[0], strides[1], 1, 0)
    g = x.shape[0]
    if g not in (1, batch):
        raise GemmLayoutError(f"{name} has batch {g}, the product has batch {batch}")
    return _Matrix(x.ptr, x.shape[1], x.shape[2], strides[1], strides[2], g,
                   strides[0] if g > 1 else 0)


def _stored(name: str, x: _Matrix) -> tuple[bool, int]:
    """(True, ld) when the memory holds X column-major, (False, ld) when it holds X^T."""
    if (x.cols <= 1 or x.s1 == 1) and (x.rows <= 1 or x.s0 >= max(1, x.cols)):
        return False, x.s0 if x.rows > 1 else max(1, x.cols)
    if (x.rows <= 1 or x.s0 == 1) and (x.cols <= 1 or x.s1 >= max(1, x.rows)):
        return True, x.s1 if x.cols > 1 else max(1, x.rows)
    raise GemmLayoutError(
        f"{name} ({x.rows} x {x.cols}, element strides ({x.s0}, {x.s1})) is neither row- nor "
        "column-contiguous with a BLAS leading dimension; copy it first")


def _as_factor(name: str, x: _Matrix, want_transpose: bool) -> tuple[int, int]:
    """(op, ld) giving X (want_transpose False) or X^T (True) as op(stored matrix)."""
    col_major, ld = _stored(name, x)
    return (OP_N if col_major != want_transpose else OP_T), ld


def _check_int(**sizes: int) -> None:
    for name, v in sizes.items():
        if v > INT_MAX:
            raise GemmLayoutError(f"{name} = {v} exceeds BLAS's 32-bit int")


def plan_gemm(a: Operand, b: Operand, out: Operand, *, alpha: float = 1.0,
              beta: float = 0.0) -> GemmCall:
    """The column-major arguments computing ``out = alpha * (a @ b) + beta * out``.

    a (M, K) or (G, M, K), b (K, N) or (G, K, N), out (M, N) or (G, M, N); one float dtype.
    Raises `GemmLayoutError` for anything BLAS cannot take without a copy (module docstring).
    """
    dt = out.dtype
    if dt not in DTYPES or a.dtype != dt or b.dtype != dt:
        raise GemmLayoutError(f"GEMM needs one dtype of float32/float64; got a {a.dtype}, "
                              f"b {b.dtype}, out {out.dtype}")
    batch = out.shape[0] if len(out.shape) == 3 else 1
    if len(out.shape) not in (2, 3) or max(len(a.shape), len(b.shape)) > len(out.shape):
        raise GemmLayoutError(f"shapes {a.shape} @ {b.shape} -> {out.shape} are not a GEMM")
    am, bm, cm = (_matrix(n, x, dt.itemsize, batch) for n, x in (("a", a), ("b", b),
                                                                   ("out", out)))
    M, K, N = am.rows, am.cols, bm.cols
    if bm.rows != K or (cm.rows, cm.cols) != (M, N):
        raise GemmLayoutError(f"shapes {a.shape} @ {b.shape} -> {out.shape} do not match")
    c_col_major, ldc = _stored("out", cm)
    if c_col_major:  # C = A B
        first, second, (m, n) = am, bm, (M, N)
        transa, lda = _as_factor("a", am, False)
        transb, ldb = _as_factor("b", bm, False)
    else:  # C^T = B^T A^T
        first, second, (m, n) = bm, am, (N, M)
        transa, lda = _as_factor("b", bm, True)
        transb, ldb = _as_factor("a", am, True)
    if batch > 1:
        extent = (cm.rows - 1) * cm.s0 + (cm.cols - 1) * cm.s1 + 1
        if cm.batch_stride < extent:
            raise GemmLayoutError(f"out's batches overlap (batch stride {cm.batch_stride} < "
                                  f"matrix extent {extent})")
    _check_int(m=m, n=n, k=K, lda=lda, ldb=ldb, ldc=ldc, batch=batch)
    return GemmCall(dtype=dt, transa=transa, transb=transb, m=m, n=n, k=K, alpha=float(alpha),
                    a_ptr=first.ptr, lda=lda, stride_a=first.batch_stride, b_ptr=second.ptr,
                    ldb=ldb, stride_b=second.batch_stride, beta=float(beta), c_ptr=cm.ptr,
                    ldc=ldc, stride_c=cm.batch_stride, batch=batch)
