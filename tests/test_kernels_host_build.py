"""kernels/lstm_kernels.cu itself, compiled for the host and launched thread by thread.

The __global__ wrappers (grid-stride loops, argument structs, and the bias sum's own row
loop) are plain C++ once ``__global__`` is defined away and ``blockIdx``/``blockDim``/
``threadIdx``/``gridDim`` are globals: a driver sets them for every (block, thread) of a grid
and calls the kernel, sequentially. The results must equal the host library's element code
(kernels/lstm_host.cpp, the reference for the whole loop tests) bit for bit, for grids that
cover the work with and without grid-stride wrap-around.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lstm_gpu.cuda import kernels
from lstm_gpu.paths.cuda_kernels import THREADS

from lstm_host_lib import HostOps, _pack, host_library, ptr

REPO = Path(__file__).resolve().parents[1]

SHIM = """
struct lstm_host_dim3 { unsigned x, y, z; };
static lstm_host_dim3 blockIdx, blockDim, threadIdx, gridDim;
"""

DRIVER = r"""
#include "lstm_kernels.cu"
template <typename F> static void launch(unsigned grid, unsigned block, F f) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned bx = 0; bx < grid; ++bx)
        for (unsigned tx = 0; tx < block; ++tx) {
            blockIdx = {bx, 0, 0};
            threadIdx = {tx, 0, 0};
            f();
        }
}
#define HOST_LAUNCHERS(S, T)                                                                \
extern "C" void colsum_partial_##S(unsigned g, unsigned b, const T* in, idx_t ts, idx_t bs, \
        idx_t gs, idx_t T_, idx_t B, idx_t U, idx_t rpc, idx_t chunks, T* partial) {        \
    launch(g, b, [&] { lstm::colsum_partial<T>(in, ts, bs, gs, T_, B, U, rpc, chunks,      \
                                               partial); });                               \
}                                                                                           \
extern "C" void colsum_final_##S(unsigned g, unsigned b, const T* partial, idx_t U,         \
        idx_t chunks, T* out) {                                                             \
    launch(g, b, [&] { lstm::colsum_final<T>(partial, U, chunks, out); });                  \
}                                                                                           \
extern "C" void fwd_step_##S(unsigned g, unsigned b, const T* xz, idx_t xz_gs, idx_t xz_bs, \
        const T* rz, idx_t rz_gs, idx_t rz_bs, const T* bias, const T* h_prev,             \
        const T* c_prev, const T* out_prev, const unsigned char* mask, const T* rec_mask,   \
        T* h_rec, T* h, T* c, T* out, T* z_save, idx_t B, idx_t U, int act, int ract,       \
        int zero_output) {                                                                  \
    launch(g, b, [&] { lstm::fwd_step<T, -1, -1>(xz, xz_gs, xz_bs, rz, rz_gs, rz_bs, bias,  \
        h_prev, c_prev, out_prev, mask, rec_mask, h_rec, h, c, out, z_save, B, U, act,      \
        ract, zero_output); });                                                             \
}                                                                                           \
extern "C" void bwd_step_##S(unsigned g, unsigned b, const T* z, const T* c_prev,           \
        const T* c, const unsigned char* mask, const T* d_out, T* g_out, T* dh,             \
        const T* dh_rec, const T* rec_mask, T* dc, T* dz, idx_t dz_gs, idx_t dz_bs,         \
        idx_t B, idx_t U, int act, int ract, int zero_output) {                             \
    launch(g, b, [&] { lstm::bwd_step<T, 1, 2>(z, c_prev, c, mask, d_out, g_out, dh,       \
        dh_rec, rec_mask, dc, dz, dz_gs, dz_bs, B, U, act, ract, zero_output); });          \
}
using lstm::idx_t;
HOST_LAUNCHERS(f32, float)
HOST_LAUNCHERS(f64, double)
"""

_LIB = {}


def kernels_on_host():
    if "lib" in _LIB:
        return _LIB["lib"]
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler: cannot build kernels/lstm_kernels.cu for the host")
    out = Path(tempfile.mkdtemp(prefix="lstm_gpu_cu_host_"))
    (out / "shim.h").write_text(SHIM)
    (out / "driver.cpp").write_text(DRIVER)
    lib = out / "libkernels_host.so"
    cmd = [cxx, "-std=c++17", "-O2", "-fno-fast-math", "-ffp-contract=off", "-shared", "-fPIC",
           "-D__global__=", "-include", str(out / "shim.h"), "-I", str(REPO / "kernels"),
           str(out / "driver.cpp"), "-o", str(lib)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    _LIB["lib"] = ctypes.CDLL(str(lib))
    return _LIB["lib"]


def _launch(name, dtype, grid, params, values):
    fn = getattr(kernels_on_host(), f"{name}_{'f64' if dtype == np.float64 else 'f32'}")
    args = _pack(params, values)
    types = {"ptr": ctypes.c_void_p, "idx": ctypes.c_longlong, "int": ctypes.c_int}
    fn.argtypes = [ctypes.c_uint, ctypes.c_uint] + [types[k] for _, k in params]
    fn.restype = None
    fn(grid, THREADS, *args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["fused", "gate_major"])
@pytest.mark.parametrize("T, B, U, chunks", [(7, 5, 3, 1), (7, 5, 3, 4), (6, 9, 2, 54),
                                            (1, 1, 1, 1), (40, 33, 5, 17)])
def test_colsum_kernels_equal_the_element_code(dtype, layout, T, B, U, chunks):
    rng = np.random.default_rng(T * 100 + B)
    if layout == "fused":
        src = rng.normal(size=(T, B, 4 * U)).astype(dtype)
        ts, bs, gs = B * 4 * U, 4 * U, U
    else:
        src = rng.normal(size=(T, 4, B, U)).astype(dtype)
        ts, bs, gs = 4 * B * U, U, B * U
    rpc = -(-T * B // chunks)
    n = -(-T * B // rpc)
    partial, out = np.full((n, 4 * U), np.nan, dtype), np.full(4 * U, np.nan, dtype)
    for grid in (1, 2, 64):  # wrap-around, partial cover, more threads than elements
        _launch("colsum_partial", dtype, grid, kernels.COLSUM_PARTIAL_PARAMS,
                {"in": src, "ts": ts, "bs": bs, "gs": gs, "T_": T, "B": B, "U": U,
                 "rows_per_chunk": rpc, "chunks": n, "partial": partial})
        _launch("colsum_final", dtype, grid, kernels.COLSUM_FINAL_PARAMS,
                {"partial": partial, "U": U, "chunks": n, "out": out})
        want, scratch = np.empty(4 * U, dtype), np.empty((n, 4 * U), dtype)
        s = "f64" if dtype == np.float64 else "f32"
        getattr(host_library(), f"lstm_colsum_{s}")(ptr(src), ts, bs, gs, T, B, U, rpc, n,
                                                    ptr(scratch), ptr(want))
        np.testing.assert_array_equal(out, want)
        sums = src.reshape(T * B, 4 * U) if layout == "fused" else \
            src.transpose(0, 2, 1, 3).reshape(T * B, 4 * U)
        np.testing.assert_allclose(out, sums.sum(0), rtol=1e-5 if dtype == np.float32
                                   else 1e-12)


def _step_case(rng, B, U, dtype):
    f = lambda *s: rng.normal(size=s).astype(dtype)  # noqa: E731
    return dict(xz=f(B, 4 * U), rz=f(B, 4 * U), bias=f(4 * U), h_prev=f(B, U), c_prev=f(B, U),
                out_prev=f(B, U), mask=(rng.random(B) > 0.3).astype(np.uint8),
                rec_mask=f(4, B, U))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("grid", [1, 3])
def test_step_kernels_equal_the_element_code(dtype, grid):
    rng = np.random.default_rng(11)
    B, U = 37, 20  # B * U = 740 > THREADS: several grid-stride rounds with grid 1
    case = _step_case(rng, B, U, dtype)
    fwd = {}
    for who in ("kernel", "host"):
        outs = {n: np.full(s, np.nan, dtype) for n, s in
                (("h", (B, U)), ("c", (B, U)), ("out", (B, U)), ("z_save", (B, 4 * U)),
                 ("h_rec", (4, B, U)))}
        args = dict(case, **outs, xz_gs=U, xz_bs=4 * U, rz_gs=U, rz_bs=4 * U, B=B, U=U, act=5,
                    ract=3, zero_output=0)
        if who == "kernel":
            _launch("fwd_step", dtype, grid, kernels.FWD_STEP_PARAMS, args)
        else:
            HostOps(dtype, fixed=False).fwd_step(**args)
        fwd[who] = outs
    for name in fwd["host"]:
        np.testing.assert_array_equal(fwd["kernel"][name], fwd["host"][name], err_msg=name)

    bwd = {}
    for who in ("kernel", "host"):
        rng = np.random.default_rng(12)
        carried = {n: rng.normal(size=(B, U)).astype(dtype) for n in ("g_out", "dh", "dc")}
        dz = np.full((4, B, U), np.nan, dtype)
        args = dict(z=fwd["host"]["z_save"], c_prev=case["c_prev"], c=fwd["host"]["c"],
                    mask=case["mask"], d_out=case["out_prev"],
                    dh_rec=rng.normal(size=(4, B, U)).astype(dtype),
                    rec_mask=case["rec_mask"], dz=dz, dz_gs=B * U, dz_bs=U, B=B, U=U, act=1,
                    ract=2, zero_output=1, **carried)
        if who == "kernel":
            _launch("bwd_step", dtype, grid, kernels.BWD_STEP_PARAMS, args)
        else:
            HostOps(dtype, fixed=True).bwd_step(**args)
        bwd[who] = dict(carried, dz=dz)
    for name in bwd["host"]:
        np.testing.assert_array_equal(bwd["kernel"][name], bwd["host"][name], err_msg=name)
