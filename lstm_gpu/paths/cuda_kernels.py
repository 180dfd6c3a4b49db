"""The CUDA kernel path: the fused kernels of kernels/ and our cuBLAS binding, in plans.

Serves every configuration the layer accepts with built-in activations (any mask, dropout and
recurrent dropout, implementation 1 and 2, with or without bias), on CuPy float32/float64
arrays. The algorithm is `lstm_gpu.paths.fused_loop` (shared with the host tests); the plans
and the eager/graph runner are `lstm_gpu.paths.loop_engine`; this module is the CUDA device.

Per step the loop issues one GEMM and one fused kernel. The GEMM goes through our own cuBLAS
binding (`lstm_gpu.cuda.cublas`), because CuPy refuses cuBLAS calls during stream capture, on
the calling thread's handle bound to the stream being run or captured and to the plan's own
workspace. Kernel arguments are packed once per plan (`cupy.cuda.function.CIntptr` for
pointers, `cupy._core._scalar.CScalar` for integers): CuPy 14.2's launcher passes `CPointer`
objects through unchanged (``cupy/cuda/function.pyx`` line 62, in ``_pointer``; ``CIntptr``
line 35, ``CScalar`` in ``cupy/_core/_scalar.pyx`` line 320) and launches with
``cuLaunchKernel`` on the current stream (line 129), which stream capture records. So an
eager step costs two calls from Python and a graph replay one launch per loop.

`LSTM_GPU_KERNEL_LOOP` selects the loop mode (`loop_engine`): eager, graph, or auto (default).
A capture runs on a side stream (``cupy.cuda.Stream.begin_capture``, relaxed mode by default:
``cupy/cuda/stream.pyx`` line 403; ``end_capture`` instantiates the graph, line 425) under a
CuPy memory hook that fails it if anything allocates; the graph is launched on the current
stream (``cupy/cuda/graph.pyx`` line 44, ``Graph.launch``). `graph_stats()` reports eager
loops, captures, replays, failed captures (fallbacks), plan evictions, record copies and the
memory plans hold; `clear_graphs()` releases every plan. What to measure on a GPU:
bench/bench_kernels.py.
"""
from __future__ import annotations

import functools
import os
import weakref
from typing import Any, Callable, Optional

import numpy as np

from .._xp import cupy_module, is_cupy_array
from ..cuda import kernels as _kernels
from ..cuda.gemm_plan import address, operand, plan_gemm
from ..cuda.streams import stream_key
from ..errors import CublasNotAvailable, PathUnavailable
from . import fused_loop
from .base import CellSpec, DropoutMasks, ForwardResult, Gradients, Weights
from .loop_engine import LOOP_MODES, LoopEngine, Plan

try:  # CuPy's kernel-argument wrappers (cupy/cuda/function.pyx, cupy/_core/_scalar.pyx)
    from cupy._core._scalar import CScalar as _CScalar
    from cupy.cuda.function import CIntptr as _CIntptr
except ImportError:  # no CuPy, or a CuPy without them: pass arrays and NumPy scalars
    _CIntptr = _CScalar = None

NAME = "cuda-kernels"

THREADS = 256
MAX_BLOCKS = 8192
LOOP_ENV = "LSTM_GPU_KERNEL_LOOP"


def _blocks(n: int) -> int:
    return max(1, min((n + THREADS - 1) // THREADS, MAX_BLOCKS))


def _kernel_arg(kind: str, value: Any) -> Any:
    """One launch argument: a pointer (array or None), an idx_t or an int."""
    if kind == "ptr":
        if _CIntptr is None:
            return value
        return _CIntptr(0 if value is None else address(value))
    scalar = np.int64(value) if kind == "idx" else np.int32(value)
    return scalar if _CScalar is None else _CScalar(scalar)


def pack_args(params, values: dict) -> tuple:
    """Launch arguments in the kernel's parameter order (`lstm_gpu.cuda.kernels.*_PARAMS`)."""
    return tuple(_kernel_arg(kind, v)
                 for (_, kind), v in zip(params, _kernels.ordered_args(params, values)))


class _PlanContext:
    """The CUDA state of one plan: its cuBLAS workspace, the handle of the thread running
    it, and an event that orders a use on another stream after the previous one.
    `last_stream` is that use's `streams.stream_key` (a ptr alone would make every thread's
    per-thread default stream look like one stream); `home` is the key of the stream the
    plan's memory was allocated on."""

    __slots__ = ("workspace", "handle", "event", "last_stream", "home")

    def __init__(self, workspace, event, home: tuple[int, int]):
        self.workspace, self.event, self.home = workspace, event, home
        self.handle = 0
        self.last_stream: Optional[tuple[int, int]] = None


def _release(ctx: _PlanContext) -> None:
    """Runs as a plan is freed, before its buffers (and then `ctx.workspace`) go back to CuPy's
    pool: to the arena of the stream they were allocated on, where the next allocation takes
    them without waiting (CuPy 14.2 ``cupy/cuda/memory.pyx`` lines 1368-1370 and 1388-1394).
    A last use on another stream may still be running then: wait for it."""
    if ctx.last_stream is not None and ctx.last_stream != ctx.home:
        ctx.event.synchronize()


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


class CupyDevice:
    """`fused_loop.Device` on CuPy's current device and stream."""

    def __init__(self, dtype, act: int, ract: int):
        from ..cuda.cublas import api as cublas_api

        cp = cupy_module()
        try:
            cublas_api.functions()
        except CublasNotAvailable as exc:
            raise PathUnavailable(f"the CUDA kernel path needs cuBLAS: {exc}") from exc
        self.xp = cp
        self.device_id = cp.cuda.Device().id
        self._cublas = cublas_api
        ks = _kernels.get_kernels(self.device_id)
        self._fwd = ks.step("fwd_step", dtype, act, ract)
        self._bwd = ks.step("bwd_step", dtype, act, ract)
        self._partial = ks.colsum("colsum_partial", dtype)
        self._final = ks.colsum("colsum_final", dtype)

    # --- ops --------------------------------------------------------------------------------

    def fwd_step(self, plan: Plan, **kw) -> Callable[[], None]:
        return functools.partial(self._fwd, (_blocks(kw["B"] * kw["U"]),), (THREADS,),
                                 pack_args(_kernels.FWD_STEP_PARAMS, kw))

    def bwd_step(self, plan: Plan, **kw) -> Callable[[], None]:
        return functools.partial(self._bwd, (_blocks(kw["B"] * kw["U"]),), (THREADS,),
                                 pack_args(_kernels.BWD_STEP_PARAMS, kw))

    def gemm(self, plan: Plan, a, b, out) -> Callable[[], None]:
        run = self._cublas.prepare_gemm(plan_gemm(operand(a), operand(b), operand(out)))
        ctx = plan.ctx
        return lambda: run(ctx.handle)

    def colsum(self, src, *, ts, bs, gs, T, B, U, out) -> None:
        rows_per_chunk, chunks = fused_loop.colsum_chunks(T * B, U)
        partial = self.xp.empty((chunks, 4 * U), out.dtype)
        self._partial((_blocks(chunks * 4 * U),), (THREADS,), pack_args(
            _kernels.COLSUM_PARTIAL_PARAMS,
            {"in": src, "ts": ts, "bs": bs, "gs": gs, "T_": T, "B": B, "U": U,
             "rows_per_chunk": rows_per_chunk, "chunks": chunks, "partial": partial}))
        self._final((_blocks(4 * U),), (THREADS,), pack_args(
            _kernels.COLSUM_FINAL_PARAMS,
            {"partial": partial, "U": U, "chunks": chunks, "out": out}))

    # --- fused_loop.Device: records copied out of their plan --------------------------------

    def stream(self) -> tuple[int, int]:
        """The `streams.stream_key` of the current stream, where new arrays come from: a
        record's copies (``ndarray.copy``, ``cupy/_core/core.pyx`` line 861) are allocated from
        that stream's arena of CuPy's pool (``cupy/cuda/memory.pyx`` lines 1361-1370)."""
        return stream_key(self.xp.cuda.get_current_stream())

    def before_free(self, allocated_on: tuple[int, int]) -> None:
        """Arrays allocated on the stream `allocated_on` were just read on the current stream
        and are dropped next. CuPy's pool returns them to their own stream's arena (lines
        1388-1398), where that stream's next allocation takes them without waiting: from
        another stream, the host waits for the reads (``Stream.synchronize``,
        ``cupy/cuda/stream.pyx`` lines 270-272). On the same stream, nothing."""
        stream = self.xp.cuda.get_current_stream()
        if stream_key(stream) != allocated_on:
            stream.synchronize()

    # --- loop_engine.LoopDevice ----------------------------------------------------------------

    def attach(self, plan: Plan) -> None:
        cp = self.xp
        cc = int(cp.cuda.Device(self.device_id).compute_capability)
        workspace = cp.empty(self._cublas.recommended_workspace_bytes(cc), cp.uint8)
        plan.ctx = _PlanContext(workspace, cp.cuda.Event(disable_timing=True), self.stream())
        weakref.finalize(plan, _release, plan.ctx).atexit = False

    def before_use(self, plan: Plan) -> None:
        ctx = plan.ctx
        stream = self.xp.cuda.get_current_stream()
        if ctx.last_stream is not None and ctx.last_stream != stream_key(stream):
            stream.wait_event(ctx.event)

    def after_use(self, plan: Plan) -> None:
        stream = self.xp.cuda.get_current_stream()
        plan.ctx.event.record(stream)
        plan.ctx.last_stream = stream_key(stream)

    def _bind(self, plan: Plan, stream_ptr: int) -> None:
        """This thread's cuBLAS handle onto `stream_ptr` and the plan's workspace. Streams are
        CuPy's: ``cupy.cuda.get_current_stream()`` (``cupy/cuda/stream.pyx`` line 88) and its
        ``ptr``, the raw ``cudaStream_t`` (0: the legacy default stream)."""
        handle = self._cublas.get_handle(self.device_id)
        ws = plan.ctx.workspace
        handle.bind(stream_ptr, ws.data.ptr, ws.nbytes)
        plan.ctx.handle = handle.ptr

    def run(self, plan: Plan, body: Callable[[], None]) -> None:
        self._bind(plan, self.xp.cuda.get_current_stream().ptr)
        body()

    def capture(self, plan: Plan, body: Callable[[], None]) -> Any:
        cp = self.xp
        guard = _AllocationGuard()
        stream = cp.cuda.Stream(non_blocking=True)
        with stream, guard.hook:
            stream.begin_capture()
            try:
                self._bind(plan, stream.ptr)
                body()
            finally:
                graph = stream.end_capture()
        if guard.hook.count:
            raise RuntimeError(f"the loop allocated memory {guard.hook.count} times during "
                               "capture")
        return graph

    def launch(self, plan: Plan, graph: Any) -> None:
        graph.launch(self.xp.cuda.get_current_stream())


def loop_mode() -> str:
    mode = os.environ.get(LOOP_ENV, "auto").strip().lower() or "auto"
    if mode not in LOOP_MODES:
        raise ValueError(f"{LOOP_ENV} must be one of {', '.join(LOOP_MODES)}; got {mode!r}")
    return mode


_ENGINE = LoopEngine(mode=loop_mode)


def graph_stats() -> dict:
    """Counters of the loop runner: eager loops, captures, replays, fallbacks (failed
    captures), evictions, record_copies / record_restores (training records moved out of /
    back into a plan), and plans / plan_bytes held now."""
    return _ENGINE.snapshot()


def clear_graphs() -> None:
    """Release every plan (buffers, graphs, cuBLAS workspaces) and forget failed captures.
    Records of training calls still alive keep their own plan until they go."""
    _ENGINE.clear()


def _check_inputs(x, spec: CellSpec) -> tuple[int, int]:
    if not is_cupy_array(x):
        raise TypeError(f"the {NAME} path runs on CuPy arrays; got {type(x).__name__}")
    act, ract = fused_loop.kernel_ids(spec)
    _kernels.ctype_of(x.dtype)  # TypeError for anything but float32/float64
    return act, ract


def forward(weights: Weights, x, mask, h0, c0, spec: CellSpec,
            dropout: Optional[DropoutMasks], training: bool) -> ForwardResult:
    act, ract = _check_inputs(x, spec)
    return fused_loop.forward(CupyDevice(x.dtype, act, ract), _ENGINE, weights, x, mask, h0,
                              c0, spec, dropout, training)


def backward(saved: fused_loop.Saved, d_last, d_sequence, d_h, d_c) -> Gradients:
    if saved is None:
        raise ValueError("backward needs the `saved` of a forward call with training=True")
    act, ract = _check_inputs(saved.x, saved.spec)
    return fused_loop.backward(CupyDevice(saved.x.dtype, act, ract), saved, d_last,
                               d_sequence, d_h, d_c)
