"""The CUDA kernel path: cuBLAS GEMMs (through CuPy) and the fused kernels of kernels/.

Serves every configuration the layer accepts with built-in activations (any mask, dropout and
recurrent dropout, implementation 1 and 2, with or without bias), on CuPy float32/float64
arrays. The algorithm is `lstm_gpu.paths.fused_loop` (shared with the host tests); this module
supplies the CUDA pointwise ops and the time-loop runner.

Per-step overhead. Each step is one GEMM and one kernel launch. At small shapes the Python
loop issuing them is slower than the GPU executes them, so the loop can be replayed as a CUDA
graph. `LSTM_GPU_KERNEL_LOOP` selects:

    eager  a Python loop, two launches per step.
    graph  the first call with a given key runs eagerly (warming up cuBLAS and the module);
           the next call with the same key captures the loop on a side stream
           (cupy.cuda.Stream.begin_capture) and every later one replays it with one launch.
           The key holds every array address, shape and stride and every scalar the loop
           uses (`fused_loop.LoopArgs`), so a replay is exactly the eager computation.
    auto   (default) graph, but a shape whose keys never repeat (addresses churn, so every
           capture is wasted) is switched to eager after a few captures without a replay.

A capture that allocates memory or fails falls back to eager with a warning, for that key.
What to measure on a GPU (bench/bench_kernels.py): eager vs graph at (8, 200, 64, 128) and
(64, 100, 512, 512), forward and forward+backward; the capture cost (first graph call); and
whether the graph keys hit in a training loop (`graph_stats()`).
"""
from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from typing import Any, Callable, Optional

import numpy as np

from .._xp import cupy_module, is_cupy_array
from ..cuda import kernels as _kernels
from ..errors import PathUnavailable
from . import fused_loop
from .base import CellSpec, DropoutMasks, ForwardResult, Gradients, Weights

NAME = "cuda-kernels"

THREADS = 256
MAX_BLOCKS = 8192
LOOP_ENV = "LSTM_GPU_KERNEL_LOOP"
LOOP_MODES = ("eager", "graph", "auto")

_i64 = np.int64
_i32 = np.int32


def _blocks(n: int) -> int:
    return max(1, min((n + THREADS - 1) // THREADS, MAX_BLOCKS))


class CupyOps:
    """`fused_loop.PointwiseOps` with the CUDA kernels, on CuPy's current stream."""

    def __init__(self, dtype, act: int, ract: int):
        ks = _kernels.get_kernels()
        self.dtype = np.dtype(dtype)
        self._fwd = ks.step("fwd_step", dtype, act, ract)
        self._bwd = ks.step("bwd_step", dtype, act, ract)
        self._partial = ks.colsum("colsum_partial", dtype)
        self._final = ks.colsum("colsum_final", dtype)

    def fwd_step(self, *, xz, xz_gs, xz_bs, rz, rz_gs, rz_bs, bias, h_prev, c_prev, out_prev,
                 mask, rec_mask, h_rec, h, c, out, z_save, B, U, act, ract, zero_output):
        self._fwd((_blocks(B * U),), (THREADS,), (
            xz, _i64(xz_gs), _i64(xz_bs), rz, _i64(rz_gs), _i64(rz_bs), bias, h_prev, c_prev,
            out_prev, mask, rec_mask, h_rec, h, c, out, z_save, _i64(B), _i64(U), _i32(act),
            _i32(ract), _i32(zero_output)))

    def bwd_step(self, *, z, c_prev, c, mask, d_out, g_out, dh, dh_rec, rec_mask, dc, dz,
                 dz_gs, dz_bs, B, U, act, ract, zero_output):
        self._bwd((_blocks(B * U),), (THREADS,), (
            z, c_prev, c, mask, d_out, g_out, dh, dh_rec, rec_mask, dc, dz, _i64(dz_gs),
            _i64(dz_bs), _i64(B), _i64(U), _i32(act), _i32(ract), _i32(zero_output)))

    def colsum(self, src, *, ts, bs, gs, T, B, U, out):
        cp = cupy_module()
        rows_per_chunk, chunks = fused_loop.colsum_chunks(T * B, U)
        partial = cp.empty((chunks, 4 * U), out.dtype)
        self._partial((_blocks(chunks * 4 * U),), (THREADS,), (
            src, _i64(ts), _i64(bs), _i64(gs), _i64(T), _i64(B), _i64(U), _i64(rows_per_chunk),
            _i64(chunks), partial))
        self._final((_blocks(4 * U),), (THREADS,), (partial, _i64(U), _i64(chunks), out))


def loop_mode() -> str:
    mode = os.environ.get(LOOP_ENV, "auto").strip().lower() or "auto"
    if mode not in LOOP_MODES:
        raise ValueError(f"{LOOP_ENV} must be one of {', '.join(LOOP_MODES)}; got {mode!r}")
    return mode


def _describe(value) -> Any:
    if value is None:
        return None
    if is_cupy_array(value):
        return (value.data.ptr, value.shape, value.strides, value.dtype.str)
    return value


def graph_key(kind: str, args: fused_loop.LoopArgs, with_addresses: bool = True) -> tuple:
    """Everything a captured loop depends on. Without addresses: the shape signature."""
    cp = cupy_module()
    arrays = []
    for name in sorted(args.arrays):
        d = _describe(args.arrays[name])
        if d is not None and not with_addresses:
            d = d[1:]
        arrays.append((name, d))
    return (kind, cp.cuda.Device().id, tuple(arrays), tuple(sorted(args.scalars.items())))


class _AllocationGuard:
    """Counts CuPy pool allocations while active (none may happen inside a capture)."""

    def __init__(self):
        cp = cupy_module()

        class Hook(cp.cuda.MemoryHook):
            name = "lstm_gpu_capture_guard"

            def __init__(hook):
                hook.count = 0

            def malloc_preprocess(hook, **kwargs):
                hook.count += 1

        self.hook = Hook()


class GraphRunner:
    """`fused_loop.Runner` that replays time loops as CUDA graphs (see the module doc)."""

    GIVE_UP_AFTER = 4  # auto: captures of one shape without any replay before going eager

    def __init__(self, max_graphs: int = 16):
        self.max_graphs = max_graphs
        self._graphs: OrderedDict = OrderedDict()
        self._seen: OrderedDict = OrderedDict()
        self._failed: set = set()
        self._per_shape: dict = {}  # shape signature -> [captures, replays]
        self._lock = threading.Lock()
        self.stats = {"eager": 0, "captures": 0, "replays": 0, "fallbacks": 0}

    def clear(self) -> None:
        with self._lock:
            self._graphs.clear()
            self._seen.clear()
            self._failed.clear()
            self._per_shape.clear()

    def __call__(self, kind: str, args: fused_loop.LoopArgs, body: Callable[[], None]) -> None:
        mode = loop_mode()
        if mode == "eager":
            return self._eager(body)
        key = graph_key(kind, args)
        shape = graph_key(kind, args, with_addresses=False)
        with self._lock:
            graph = self._graphs.get(key)
            if graph is not None:
                self._graphs.move_to_end(key)
            counts = self._per_shape.setdefault(shape, [0, 0])
            give_up = (mode == "auto" and counts[1] == 0 and counts[0] >= self.GIVE_UP_AFTER)
            first = key not in self._seen
            if first:
                self._seen[key] = True
                while len(self._seen) > 8 * self.max_graphs:
                    self._seen.popitem(last=False)
        if graph is None and (first or give_up or key in self._failed):
            return self._eager(body)
        if graph is None:
            graph = self._capture(body)
            if graph is None:
                with self._lock:
                    self._failed.add(key)
                return self._eager(body)
            with self._lock:
                self._graphs[key] = graph
                counts[0] += 1
                self.stats["captures"] += 1
                while len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
        else:
            with self._lock:
                counts[1] += 1
                self.stats["replays"] += 1
        graph.launch(cupy_module().cuda.get_current_stream())

    def _eager(self, body):
        self.stats["eager"] += 1
        body()

    def _capture(self, body) -> Optional[Any]:
        cp = cupy_module()
        guard = _AllocationGuard()
        stream = cp.cuda.Stream(non_blocking=True)
        graph = None
        try:
            with stream, guard.hook:
                stream.begin_capture()
                try:
                    body()
                finally:
                    graph = stream.end_capture()
        except Exception as exc:  # capture refused by the driver or a library
            self.stats["fallbacks"] += 1
            warnings.warn(f"lstm_gpu: CUDA graph capture of the kernel path's time loop failed "
                          f"({exc!r}); running it eagerly", RuntimeWarning, stacklevel=3)
            return None
        if guard.hook.count:
            self.stats["fallbacks"] += 1
            warnings.warn("lstm_gpu: the kernel path's time loop allocated memory during CUDA "
                          "graph capture; running it eagerly for this shape",
                          RuntimeWarning, stacklevel=3)
            return None
        return graph


_RUNNER = GraphRunner()


def graph_stats() -> dict:
    """Counters of the loop runner: eager loops, captures, replays, capture fallbacks."""
    return dict(_RUNNER.stats)


def clear_graphs() -> None:
    _RUNNER.clear()


def _check_inputs(x, spec: CellSpec) -> tuple[int, int]:
    if not is_cupy_array(x):
        raise TypeError(f"the {NAME} path runs on CuPy arrays; got {type(x).__name__}")
    act, ract = spec.activation.kernel_id, spec.recurrent_activation.kernel_id
    if act < 0 or ract < 0:
        raise PathUnavailable(
            "the CUDA kernel path has no kernel form for a Python callable activation; "
            "the layer runs the xp-generic reference instead"
        )
    _kernels.ctype_of(x.dtype)  # TypeError for anything but float32/float64
    return act, ract


def forward(weights: Weights, x, mask, h0, c0, spec: CellSpec,
            dropout: Optional[DropoutMasks], training: bool) -> ForwardResult:
    act, ract = _check_inputs(x, spec)
    ops = CupyOps(x.dtype, act, ract)
    return fused_loop.forward(ops, weights, x, mask, h0, c0, spec, dropout, training,
                              runner=_RUNNER)


def backward(saved: fused_loop.Saved, d_last, d_sequence, d_h, d_c) -> Gradients:
    if saved is None:
        raise ValueError("backward needs the `saved` of a forward call with training=True")
    act, ract = _check_inputs(saved.x, saved.spec)
    ops = CupyOps(saved.x.dtype, act, ract)
    return fused_loop.backward(ops, saved, d_last, d_sequence, d_h, d_c, runner=_RUNNER)
