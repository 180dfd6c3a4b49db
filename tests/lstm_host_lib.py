"""Test helper: build kernels/lstm_host.cpp with CMake and call it through ctypes.

`host_library()` configures and builds the repository's CMakeLists.txt (host target only) once
per test session into a temporary folder and returns the loaded library with every prototype
declared; it calls `pytest.skip` with the reason when cmake or a C++ compiler is missing.
`HostOps` runs the fused steps on NumPy arrays with it; `HostDevice` is the kernel path's
`fused_loop.Device` on the host (those steps, SciPy's BLAS for the GEMMs, a recording capture),
so the whole time loop runs on the CPU with the same per-element code and GEMM arguments as on
a GPU.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lstm_gpu.cuda.gemm_plan import operand, plan_gemm
from lstm_gpu.cuda.kernels import BWD_STEP_PARAMS, FWD_STEP_PARAMS, ordered_args
from lstm_gpu.paths.fused_loop import colsum_chunks

import host_blas

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


def _pack(params, values: dict) -> list:
    """Arguments in the kernels' parameter order (`lstm_gpu.cuda.kernels.*_PARAMS`, the order
    lstm_host.cpp repeats): pointers as addresses (None for NULL), integers as they are."""
    return [ptr(v) if kind == "ptr" else v
            for (_, kind), v in zip(params, ordered_args(params, values))]


class HostOps:
    """The fused steps and the bias sum on NumPy arrays, with the kernels' element bodies.

    fixed=True routes (tanh, sigmoid) to the <T, 1, 2> instantiation, as the CUDA path does.
    `fwd_args` / `bwd_args` pack the arguments once (for a prepared op); `fwd_step` /
    `bwd_step` run them now.
    """

    def __init__(self, dtype, fixed: bool = True):
        self.s = SUFFIX[np.dtype(dtype)]
        self.fixed = int(fixed)
        self.lib = host_library()
        self.fwd_fn = getattr(self.lib, f"lstm_fwd_step_{self.s}")
        self.bwd_fn = getattr(self.lib, f"lstm_bwd_step_{self.s}")

    def fwd_args(self, **kw) -> tuple:
        return (*_pack(FWD_STEP_PARAMS, kw), self.fixed)

    def bwd_args(self, **kw) -> tuple:
        return (*_pack(BWD_STEP_PARAMS, kw), self.fixed)

    def fwd_step(self, **kw) -> None:
        self.fwd_fn(*self.fwd_args(**kw))

    def bwd_step(self, **kw) -> None:
        self.bwd_fn(*self.bwd_args(**kw))

    def colsum(self, src, *, ts, bs, gs, T, B, U, out):
        rows_per_chunk, chunks = colsum_chunks(T * B, U, target_threads=64 * 4 * U)
        partial = np.empty((chunks, 4 * U), out.dtype)
        getattr(self.lib, f"lstm_colsum_{self.s}")(ptr(src), ts, bs, gs, T, B, U,
                                                   rows_per_chunk, chunks, ptr(partial),
                                                   ptr(out))


class HostOp:
    """One prepared operation of a host program: runs, or is recorded while capturing."""

    def __init__(self, device: "HostDevice", kind: str, fn, args=()):
        self.device, self.kind, self.fn, self.args = device, kind, fn, args

    def __call__(self) -> None:
        if self.device.tape is not None:
            self.device.tape.append(self)
        else:
            self.execute()

    def execute(self) -> None:
        self.device.executed[self.kind] += 1
        self.fn(*self.args)


class HostDevice:
    """`fused_loop.Device` on NumPy arrays: the kernels' element code (host library) for the
    fused steps and SciPy's Fortran BLAS on `gemm_plan`'s arguments for the GEMMs (the calls
    cuBLAS receives on a GPU).

    `capture` is the host model of CUDA stream capture: the body runs with a tape, every op
    it issues is recorded instead of executed, and `launch` executes the tape. Python work a
    body did outside its ops would be missing from the replay, as on a GPU. `xp` may be a
    recording stand-in array module; `in_body` is True while a loop body runs.
    """

    device_id = "host"

    def __init__(self, dtype, fixed: bool = True, xp=np, capture_error: Exception = None):
        self.ops = HostOps(dtype, fixed)
        self.xp = xp
        self.tape = None
        self.in_body = False
        self.capture_error = capture_error
        self.executed: Counter = Counter()

    # fused_loop.Device
    def fwd_step(self, plan, **kw) -> HostOp:
        return HostOp(self, "fwd_step", self.ops.fwd_fn, self.ops.fwd_args(**kw))

    def bwd_step(self, plan, **kw) -> HostOp:
        return HostOp(self, "bwd_step", self.ops.bwd_fn, self.ops.bwd_args(**kw))

    def gemm(self, plan, a, b, out) -> HostOp:
        call = plan_gemm(operand(a), operand(b), operand(out))
        return HostOp(self, "gemm", host_blas.prepare(call))

    def colsum(self, src, **kw) -> None:
        self.ops.colsum(src, **kw)

    # loop_engine.LoopDevice
    def attach(self, plan) -> None:
        plan.ctx = None

    def before_use(self, plan) -> None:
        pass

    def after_use(self, plan) -> None:
        pass

    def stream(self) -> None:
        return None

    def before_free(self, allocated_on) -> None:
        pass

    def run(self, plan, body) -> None:
        self.in_body = True
        try:
            body()
        finally:
            self.in_body = False

    def capture(self, plan, body) -> list:
        if self.capture_error is not None:
            raise self.capture_error
        self.tape, self.in_body = [], True
        try:
            body()
            return self.tape
        finally:
            self.tape, self.in_body = None, False

    def launch(self, plan, graph) -> None:
        for op in graph:
            op.execute()
