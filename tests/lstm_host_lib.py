"""Test helper: build kernels/lstm_host.cpp with CMake and call it through ctypes.

`host_library()` configures and builds the repository's CMakeLists.txt (host target only) once
per test session into a temporary folder and returns the loaded library with every prototype
declared; it calls `pytest.skip` with the reason when cmake or a C++ compiler is missing.
`HostOps` implements `lstm_gpu.paths.fused_loop.PointwiseOps` on NumPy arrays with it, so the
kernel path's orchestration runs on the CPU with the same per-element code as the GPU kernels.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lstm_gpu.paths.fused_loop import colsum_chunks

REPO = Path(__file__).resolve().parents[1]
_LIB = None
_BUILD_ERROR = None

P = ctypes.c_void_p
I64 = ctypes.c_longlong
I32 = ctypes.c_int

_SIGNATURES = {
    "lstm_act_fn_{s}": [I32, P, P, I64],
    "lstm_act_grad_{s}": [I32, P, P, P, I64],
    "lstm_fwd_step_{s}": [P, I64, I64, P, I64, I64, P, P, P, P, P, P, P, P, P, P, P, I64, I64,
                          I32, I32, I32, I32],
    "lstm_bwd_step_{s}": [P, P, P, P, P, P, P, P, P, P, P, I64, I64, I64, I64, I32, I32, I32,
                          I32],
    "lstm_colsum_{s}": [P, I64, I64, I64, I64, I64, I64, I64, I64, P, P],
}
SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def _build() -> Path:
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed: cannot build the host library of kernels/")
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("no C++ compiler (c++/g++/clang++): cannot build the host library")
    out = Path(tempfile.mkdtemp(prefix="lstm_gpu_host_"))
    cmds = [["cmake", "-S", str(REPO), "-B", str(out), "-DLSTM_GPU_BUILD_CUDA=OFF",
             "-DCMAKE_BUILD_TYPE=Release"],
            ["cmake", "--build", str(out), "--target", "lstm_cell_host", "-j2"]]
    for cmd in cmds:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    names = {"linux": "liblstm_cell_host.so", "darwin": "liblstm_cell_host.dylib"}
    lib = out / names.get(sys.platform, "lstm_cell_host.dll")
    if not lib.exists():
        found = list(out.rglob("*lstm_cell_host*"))
        if not found:
            raise RuntimeError(f"the build produced no lstm_cell_host library in {out}")
        lib = found[0]
    return lib


def host_library():
    """The loaded host library (built once per session)."""
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(str(_build()))
        for pattern, argtypes in _SIGNATURES.items():
            for s in ("f32", "f64"):
                fn = getattr(lib, pattern.format(s=s))
                fn.argtypes = argtypes
                fn.restype = None
        lib.lstm_act_count.argtypes = []
        lib.lstm_act_count.restype = I32
        _LIB = lib
    return _LIB


def ptr(a):
    """Address of a NumPy array's first element (None for None)."""
    return None if a is None else a.ctypes.data


def act_fn(act: int, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    getattr(host_library(), f"lstm_act_fn_{SUFFIX[x.dtype]}")(act, ptr(x), ptr(y), x.size)
    return y


def act_grad(act: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y, dtype=x.dtype)
    dy = np.empty_like(x)
    getattr(host_library(), f"lstm_act_grad_{SUFFIX[x.dtype]}")(act, ptr(x), ptr(y), ptr(dy),
                                                               x.size)
    return dy


class HostOps:
    """PointwiseOps over NumPy arrays, running the kernels' element bodies on the CPU.

    fixed=True routes (tanh, sigmoid) to the <T, 1, 2> instantiation, as the CUDA path does.
    """

    def __init__(self, dtype, fixed: bool = True):
        self.s = SUFFIX[np.dtype(dtype)]
        self.fixed = int(fixed)
        self.lib = host_library()

    def fwd_step(self, *, xz, xz_gs, xz_bs, rz, rz_gs, rz_bs, bias, h_prev, c_prev, out_prev,
                 mask, rec_mask, h_rec, h, c, out, z_save, B, U, act, ract, zero_output):
        getattr(self.lib, f"lstm_fwd_step_{self.s}")(
            ptr(xz), xz_gs, xz_bs, ptr(rz), rz_gs, rz_bs, ptr(bias), ptr(h_prev), ptr(c_prev),
            ptr(out_prev), ptr(mask), ptr(rec_mask), ptr(h_rec), ptr(h), ptr(c), ptr(out),
            ptr(z_save), B, U, act, ract, zero_output, self.fixed)

    def bwd_step(self, *, z, c_prev, c, mask, d_out, g_out, dh, dh_rec, rec_mask, dc, dz,
                 dz_gs, dz_bs, B, U, act, ract, zero_output):
        getattr(self.lib, f"lstm_bwd_step_{self.s}")(
            ptr(z), ptr(c_prev), ptr(c), ptr(mask), ptr(d_out), ptr(g_out), ptr(dh),
            ptr(dh_rec), ptr(rec_mask), ptr(dc), ptr(dz), dz_gs, dz_bs, B, U, act, ract,
            zero_output, self.fixed)

    def colsum(self, src, *, ts, bs, gs, T, B, U, out):
        rows_per_chunk, chunks = colsum_chunks(T * B, U, target_threads=64 * 4 * U)
        partial = np.empty((chunks, 4 * U), out.dtype)
        getattr(self.lib, f"lstm_colsum_{self.s}")(ptr(src), ts, bs, gs, T, B, U,
                                                   rows_per_chunk, chunks, ptr(partial),
                                                   ptr(out))
