"""The GEMM planner (`lstm_gpu.cuda.gemm_plan`) against SciPy's Fortran BLAS.

Every plan is executed by SciPy's ``sgemm``/``dgemm`` on the raw buffers (tests/host_blas.py):
the same column-major contract cuBLAS has. Operands are contiguous, transposed, offset views
into padded buffers (row or column layout, leading dimension larger than the matrix), single
or batched, float32 or float64; the product must be ``a @ b`` and nothing outside the output
view may change.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_gpu.cuda import gemm_plan as gp

import host_blas

LAYOUTS = ("c", "f", "row-padded", "col-padded")


def place(values: np.ndarray, layout: str, fill=np.nan) -> tuple[np.ndarray, np.ndarray]:
    """(view holding a copy of `values` in `layout`, the buffer it lives in)."""
    *batch, rows, cols = values.shape
    if layout == "c":
        buf = values.copy()
        return buf, buf
    if layout == "f":  # each matrix column-major, batches packed
        buf = np.ascontiguousarray(np.swapaxes(values, -1, -2))
        return np.swapaxes(buf, -1, -2), buf
    if layout == "row-padded":  # offset 1 batch slot, 2 rows and 3 columns; ld = cols + 5
        buf = np.full((*[b + 1 for b in batch], rows + 3, cols + 5), fill, values.dtype)
        view = buf[(slice(1, None),) * len(batch) + (slice(2, 2 + rows), slice(3, 3 + cols))]
    else:  # "col-padded": the transpose of a row-padded buffer
        buf = np.full((*[b + 1 for b in batch], cols + 4, rows + 2), fill, values.dtype)
        view = np.swapaxes(
            buf[(slice(1, None),) * len(batch) + (slice(1, 1 + cols), slice(2, 2 + rows))],
            -1, -2)
    view[...] = values
    return view, buf


def run_plan(a, b, out, **kw):
    host_blas.prepare(gp.plan_gemm(gp.operand(a), gp.operand(b), gp.operand(out), **kw))()


def check_product(rng, shape_a, shape_b, shape_out, la, lb, lo, dtype, alpha=1.0, beta=0.0):
    a_val, b_val, c_val = (rng.standard_normal(s).astype(dtype)
                           for s in (shape_a, shape_b, shape_out))
    want = alpha * np.matmul(a_val.astype(np.float64), b_val.astype(np.float64)) + beta * c_val
    a, b = place(a_val, la)[0], place(b_val, lb)[0]
    out, buf = place(c_val, lo)
    outside = ~place(np.ones(shape_out, bool), lo, fill=False)[1]
    before = buf.copy()
    run_plan(a, b, out, alpha=alpha, beta=beta)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol * max(1, shape_a[-1]))
    np.testing.assert_array_equal(buf[outside], before[outside])


dims = st.integers(min_value=1, max_value=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=dims, n=dims, k=dims, batch=st.sampled_from([0, 1, 3]),
       la=st.sampled_from(LAYOUTS), lb=st.sampled_from(LAYOUTS), lo=st.sampled_from(LAYOUTS),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_plan_matches_matmul_under_scipy_blas(m, n, k, batch, la, lb, lo, dtype, seed):
    lead = (batch,) if batch else ()
    check_product(np.random.default_rng(seed), lead + (m, k), lead + (k, n), lead + (m, n),
                  la, lb, lo, dtype)


@pytest.mark.parametrize("lo", LAYOUTS)
def test_alpha_beta_accumulate(lo):
    check_product(np.random.default_rng(1), (4, 3), (3, 5), (4, 5), "f", "row-padded", lo,
                  np.float64, alpha=-0.5, beta=2.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_broadcast_weight_and_strided_batch(dtype):
    """A 2-D b against a batched a (batch stride 0), and a batch view with a gap between
    matrices: the loop's per-gate GEMM and its transposed-weight backward form."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 3, 6)).astype(dtype)
    w = rng.standard_normal((4, 6, 6)).astype(dtype)
    out_buf = np.full((4, 5, 6), np.nan, dtype)  # batch stride 30, matrices 3 x 6
    out = out_buf[:, 1:4, :]
    run_plan(a, w.transpose(0, 2, 1), out)
    np.testing.assert_allclose(out, a @ w.transpose(0, 2, 1), rtol=1e-5)
    assert np.isnan(out_buf[:, 0]).all() and np.isnan(out_buf[:, 4]).all()
    b2 = rng.standard_normal((6, 2)).astype(dtype)
    out2 = np.empty((4, 3, 2), dtype)
    call = gp.plan_gemm(gp.operand(a), gp.operand(b2), gp.operand(out2))
    assert call.batch == 4 and 0 in (call.stride_a, call.stride_b)
    host_blas.prepare(call)()
    np.testing.assert_allclose(out2, a @ b2, rtol=1e-5)


def test_plan_arguments_for_the_canonical_cases():
    a = np.zeros((8, 16), np.float32)  # h (B, U)
    w = np.zeros((16, 64), np.float32)  # U (U, 4U)
    out = np.zeros((8, 64), np.float32)
    call = gp.plan_gemm(gp.operand(a), gp.operand(w), gp.operand(out))
    # C^T (64 x 8) = W^T (64 x 16, stored as W row-major: op N, ld 64) A^T (op N, ld 16)
    assert (call.transa, call.transb, call.m, call.n, call.k) == (gp.OP_N, gp.OP_N, 64, 8, 16)
    assert (call.lda, call.ldb, call.ldc) == (64, 16, 64)
    assert (call.a_ptr, call.b_ptr, call.c_ptr) == (w.ctypes.data, a.ctypes.data,
                                                    out.ctypes.data)
    dz = np.zeros((8, 64), np.float32)
    dh = np.zeros((8, 16), np.float32)
    call = gp.plan_gemm(gp.operand(dz), gp.operand(w.T), gp.operand(dh))
    assert (call.transa, call.transb, call.m, call.n, call.k) == (gp.OP_T, gp.OP_N, 16, 8, 64)
    assert (call.lda, call.ldb, call.ldc, call.batch) == (64, 64, 16, 1)


def test_offset_views_use_their_first_element():
    big = np.arange(60, dtype=np.float64).reshape(6, 10)
    a = big[1:4, 2:7]
    call = gp.plan_gemm(gp.operand(a), gp.operand(np.ones((5, 2))), gp.operand(np.ones((3, 2))))
    assert call.b_ptr == big.ctypes.data + (1 * 10 + 2) * 8 and call.ldb == 10


@pytest.mark.parametrize("make, match", [
    (lambda: (np.ones((6, 6))[::2, ::2], np.ones((3, 2)), np.ones((3, 2))), "neither row"),
    (lambda: (np.ones((3, 4))[::-1], np.ones((4, 2)), np.ones((3, 2))), "non-negative"),
    (lambda: (np.broadcast_to(np.ones(4), (3, 4)), np.ones((4, 2)), np.ones((3, 2))),
     "neither row"),
    (lambda: (np.ones((3, 4), np.float32), np.ones((4, 2)), np.ones((3, 2))), "one dtype"),
    (lambda: (np.ones((3, 4)), np.ones((5, 2)), np.ones((3, 2))), "do not match"),
    (lambda: (np.ones((3, 4)), np.ones((4, 2)), np.ones((2, 3)).T[:2]), "do not match"),
    (lambda: (np.ones((2, 3, 4)), np.ones((3, 4, 2)), np.ones((2, 3, 2))), "batch"),
    (lambda: (np.ones((2, 3, 4)), np.ones((4, 2)), np.ones((3, 2))), "not a GEMM"),
    (lambda: (np.ones((2, 3, 4)), np.ones((4, 2)),
              np.lib.stride_tricks.as_strided(np.ones((3, 2)), (2, 3, 2), (8, 16, 8))),
     "overlap"),
    (lambda: (np.ones((3, 4), np.int32), np.ones((4, 2), np.int32),
              np.ones((3, 2), np.int32)), "float32/float64"),
])
def test_refused_layouts(make, match):
    a, b, out = make()
    with pytest.raises(gp.GemmLayoutError, match=match):
        gp.plan_gemm(gp.operand(a), gp.operand(b), gp.operand(out))


def test_sizes_beyond_int32_are_refused():
    big = gp.Operand(0, (2 ** 31, 4), (32, 8), np.dtype(np.float64))
    with pytest.raises(gp.GemmLayoutError, match="32-bit"):
        gp.plan_gemm(big, gp.Operand(0, (4, 2), (16, 8), np.dtype(np.float64)),
                     gp.Operand(0, (2 ** 31, 2), (16, 8), np.dtype(np.float64)))
