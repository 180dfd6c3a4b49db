"""Ordering GPU work across streams and threads: the GPU paths' decisions, on the host.

The stand-in below keeps CUDA's stream semantics that the decisions depend on: a stream is its
``ptr``, except ``cudaStreamPerThread`` (ptr 2; CUDA's ``driver_types.h`` line 121), which is
another stream in every host thread; an event is recorded on, and a wait is put on, the stream
its ``ptr`` names *in the calling thread*. In CuPy's per-thread-default-stream mode every
thread's current stream is the one ``Stream.ptds`` object (CuPy 14.2 ``cupy/cuda/stream.pyx``
lines 74 and 648). The log says which real stream each record and wait reached. `_Pool`, the
stand-in of CuPy's memory pool, adds which stream's arena each block is allocated from and
goes back to, and which stream used it: `unsafe_frees` finds a block returned while a use on
another stream may still run.
"""
from __future__ import annotations

import gc
import itertools
import threading
import types
import weakref

import numpy as np
import pytest

from lstm_gpu.cuda import streams
from lstm_gpu.paths import fused_loop
from lstm_gpu.paths.loop_engine import LoopEngine, Plan

from lstm_host_lib import HostDevice
from lstm_testlib import run_in_thread
from test_loop_engine_host import _args, assert_close, cases, fwd, grads_for, outputs, ref


def _actual(ptr: int) -> tuple[int, int]:
    """The stream a ptr names in the calling thread (CUDA's rule, not lstm_gpu's code)."""
    return ptr, (threading.get_ident() if ptr == 2 else 0)


class _Waited(tuple):
    """A log entry for a wait: ``("host waits for", stream)`` or ``("wait", on, for)``; it
    covers the work issued on the awaited stream before log position `since`."""

    def __new__(cls, entry, since):
        self = super().__new__(cls, entry)
        self.since = since
        return self


class _Event:
    def __init__(self, log, **kwargs):
        self.log, self.recorded_on, self.at = log, None, None

    def record(self, stream=None):
        self.recorded_on, self.at = _actual(stream.ptr), len(self.log)
        self.log.append(("record", self.recorded_on))

    def synchronize(self):
        self.log.append(_Waited(("host waits for", self.recorded_on), self.at))


class _Stream:
    def __init__(self, cuda, ptr):
        self.cuda, self.ptr = cuda, ptr

    def record(self, event=None):
        event = self.cuda.Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        self.cuda.log.append(_Waited(("wait", _actual(self.ptr), event.recorded_on), event.at))

    def synchronize(self):
        self.cuda.log.append(_Waited(("host waits for", _actual(self.ptr)), len(self.cuda.log)))

    def __enter__(self):
        self.cuda.stack().append(self)
        return self

    def __exit__(self, *exc):
        self.cuda.stack().pop()


class _Cuda:
    """cupy.cuda as the paths use it: current stream per thread, events, device."""

    def __init__(self, per_thread_default: bool):
        self.log = []
        self._local = threading.local()
        self._next = 1000
        self.default = _Stream(self, 2 if per_thread_default else 0)  # Stream.ptds / .null

    def stack(self) -> list:
        if not hasattr(self._local, "stack"):
            self._local.stack = [self.default]
        return self._local.stack

    def get_current_stream(self):
        return self.stack()[-1]

    def Stream(self, **kwargs):
        self._next += 16
        return _Stream(self, self._next)

    def Event(self, **kwargs):
        return _Event(self.log, **kwargs)

    def Device(self, device_id=0):
        return types.SimpleNamespace(id=device_id, compute_capability="80")


class _DeviceArray(np.ndarray):
    """An array of `_Pool`: every NumPy-level use (an assignment to or from it, a copy, a
    routine or ufunc reading or writing it) is logged as ``("use", block, stream)``."""

    pool = None  # the `_Pool` of this subclass
    block = None  # the allocation's number, on the array the pool made (None on views)

    def __array_finalize__(self, obj):
        self.block = None

    def __setitem__(self, key, value):
        self.pool.used(self, value)
        super().__setitem__(key, value)

    def copy(self, order="C"):
        self.pool.used(self)
        out = self.pool.empty(self.shape, self.dtype)
        np.copyto(out.view(np.ndarray), self.view(np.ndarray))
        return out

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        self.pool.used(*inputs, *kwargs.get("out", ()))
        plain = (lambda a: a.view(np.ndarray) if isinstance(a, np.ndarray) else a)
        if "out" in kwargs:
            kwargs["out"] = tuple(plain(o) for o in kwargs["out"])
        return getattr(ufunc, method)(*(plain(i) for i in inputs), **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        self.pool.used(*args, *kwargs.values())
        return super().__array_function__(func, types, args, kwargs)


class _Pool:
    """CuPy's memory pool as the array module of a path, as far as streams go: a block
    belongs to the arena of the stream current when it is allocated and goes back to that
    arena when freed, where the next allocation on that stream takes it without waiting
    (CuPy 14.2 ``cupy/cuda/memory.pyx`` lines 1361-1370 and 1388-1398). The log says
    ``("alloc", block, arena)`` and ``("free", block, arena)``; `unsafe_frees` reads it.
    Other routines are NumPy's."""

    uint8 = np.uint8

    def __init__(self, cuda):
        self.cuda = cuda
        self.Array = type("DeviceArray", (_DeviceArray,), {"pool": self})
        self._blocks = itertools.count()

    def __getattr__(self, name):
        return getattr(np, name)

    def _stream(self) -> tuple[int, int]:
        return _actual(self.cuda.get_current_stream().ptr)

    def empty(self, shape, dtype=np.float64):
        a = np.ndarray.__new__(self.Array, shape, dtype)  # owns its memory: views point here
        a.block, arena = next(self._blocks), self._stream()
        self.cuda.log.append(("alloc", a.block, arena))
        weakref.finalize(a, self.cuda.log.append, ("free", a.block, arena))
        return a

    def zeros(self, shape, dtype=np.float64):
        a = self.empty(shape, dtype)
        a.view(np.ndarray).fill(0)
        return a

    def used(self, *args) -> None:
        for a in args:
            if isinstance(a, (list, tuple)):
                self.used(*a)
            elif isinstance(a, _DeviceArray):
                while a.block is None and isinstance(a.base, _DeviceArray):
                    a = a.base
                if a.block is not None:
                    self.cuda.log.append(("use", a.block, self._stream()))


def unsafe_frees(log: list) -> list:
    """``(block, arena, stream)`` for every block freed to its arena after a use on another
    stream that neither a host wait nor a wait of the arena's stream covers: the next
    allocation on that stream could take the block while the use still runs."""
    bad = []
    for at, entry in enumerate(log):
        if entry[0] != "free":
            continue
        _, block, arena = entry
        last_use = {e[2]: i for i, e in enumerate(log[:at])
                    if e[0] == "use" and e[1] == block and e[2] != arena}
        for stream, used_at in last_use.items():
            if not any(isinstance(e, _Waited) and e.since > used_at
                       and e in (("host waits for", stream), ("wait", arena, stream))
                       for e in log[used_at + 1:at]):
                bad.append((block, arena, stream))
    return bad


def test_the_per_thread_stream_handle_is_cupys_and_cudas():
    cupy = pytest.importorskip("cupy")
    from cupy_backends.cuda.api import runtime

    assert streams.PER_THREAD == runtime.streamPerThread == cupy.cuda.Stream.ptds.ptr
    assert cupy.cuda.Stream.null.ptr == 0


def test_stream_keys():
    cuda = _Cuda(per_thread_default=True)
    mine = streams.stream_key(cuda.default)
    theirs = run_in_thread(lambda: streams.stream_key(cuda.default))
    assert mine != theirs and mine[0] == theirs[0] == 2
    assert streams.of_another_thread(theirs) and not streams.of_another_thread(mine)
    null, other = _Stream(cuda, 0), cuda.Stream()
    assert streams.stream_key(null) == run_in_thread(lambda: streams.stream_key(null))
    assert not streams.of_another_thread(run_in_thread(lambda: streams.stream_key(other)))


# --- the kernel path's plans --------------------------------------------------------------------


def _kernel_device(cuda):
    from lstm_gpu.paths.cuda_kernels import CupyDevice

    device = CupyDevice.__new__(CupyDevice)  # no GPU: only the stream logic is used
    device.xp = types.SimpleNamespace(cuda=cuda, uint8=np.uint8,
                                      empty=lambda n, dtype: np.empty(n, dtype))
    device.device_id = 0
    device._cublas = types.SimpleNamespace(recommended_workspace_bytes=lambda cc: 256)
    return device


def _use(device, plan):
    device.before_use(plan)
    device.after_use(plan)


def test_a_plan_used_by_two_threads_on_per_thread_streams_is_ordered():
    cuda = _Cuda(per_thread_default=True)
    device = _kernel_device(cuda)
    plan = Plan(("k",), False)
    device.attach(plan)
    run_in_thread(lambda: _use(device, plan))
    first_use = cuda.log[-1]
    assert first_use[0] == "record" and first_use[1] != _actual(2)
    cuda.log.clear()
    device.before_use(plan)  # this thread's per-thread stream is another stream
    assert cuda.log == [("wait", _actual(2), first_use[1])]


def test_a_plan_used_again_on_its_stream_waits_for_nothing():
    cuda = _Cuda(per_thread_default=True)
    device = _kernel_device(cuda)
    plan = Plan(("k",), False)
    device.attach(plan)
    _use(device, plan)
    cuda.log.clear()
    device.before_use(plan)
    assert cuda.log == []


@pytest.mark.parametrize("per_thread_default", [False, True])
def test_plan_buffers_go_back_to_the_pool_after_their_last_use_on_another_stream(
        per_thread_default):
    """CuPy's pool returns a freed block to the arena of the stream that allocated it, where
    the next allocation takes it without waiting (cupy/cuda/memory.pyx lines 1368-1370 and
    1388-1394): a plan last used on another stream must not release its buffers before that
    use is done."""
    cuda = _Cuda(per_thread_default)
    device = _kernel_device(cuda)
    plan = Plan(("k",), False)
    device.attach(plan)  # the buffers belong to this thread's current stream
    other = cuda.Stream()

    def use_elsewhere():
        with other:
            _use(device, plan)
        return _actual(other.ptr)

    elsewhere = use_elsewhere() if not per_thread_default else run_in_thread(
        lambda: (_use(device, plan), _actual(2))[1])
    cuda.log.clear()
    del plan
    gc.collect()
    assert cuda.log == [("host waits for", elsewhere)]


def test_a_plan_last_used_on_its_own_stream_is_released_without_waiting():
    cuda = _Cuda(per_thread_default=False)
    device = _kernel_device(cuda)
    plan = Plan(("k",), False)
    device.attach(plan)
    other = cuda.Stream()
    with other:
        _use(device, plan)
    _use(device, plan)  # back on the home stream, after waiting for `other`
    cuda.log.clear()
    del plan
    gc.collect()
    assert cuda.log == []


# --- the kernel path's training records: copied out of their plan, and back -------------------


def test_the_pool_log_shows_a_block_freed_while_another_stream_may_use_it():
    """Negative control of `unsafe_frees`: a block used on another stream goes back to its
    arena safely only after the host, or the arena's stream, waited for that use."""
    cuda = _Cuda(per_thread_default=False)
    pool, other = _Pool(cuda), cuda.Stream()
    a, b, c, d = (pool.empty(3) for _ in range(4))  # blocks 0-3, in the null stream's arena
    with other:
        a.copy(), b.copy(), c.copy()
        done = other.record(cuda.Event())
        d.copy()  # after the event
    null, there = cuda.get_current_stream(), _actual(other.ptr)
    del a  # nothing waited
    null.wait_event(done)
    del b, d
    other.synchronize()
    del c
    assert unsafe_frees(cuda.log) == [(0, _actual(0), there), (3, _actual(0), there)]


def _kernel_loop_device(cuda):
    """The kernel path's loops computed on the host (`HostDevice`: the kernels' element code,
    SciPy's BLAS) under `CupyDevice`'s stream and memory decisions, over `_Cuda` and
    `_Pool`."""
    pool = _Pool(cuda)
    decisions = _kernel_device(cuda)
    decisions.xp = pool
    device = HostDevice(np.float64, xp=pool)
    for name in ("attach", "before_use", "after_use", "stream", "before_free"):
        setattr(device, name, getattr(decisions, name))
    return device


def _record_copied_out_and_back(cuda, evicting):
    """Three live training records of one shape (two slots): the third forward, run through
    `evicting`, copies the first record out of its plan; the first record's backward copies
    it back into a slot (copying the second out). Checks the gradients, frees everything and
    returns the engine's counters."""
    engine, device = LoopEngine(mode=lambda: "eager", max_slots=2), _kernel_loop_device(cuda)
    cs = cases(3, mask_kind="left")
    first, second = fwd(engine, device, cs[0]), fwd(engine, device, cs[1])
    third = evicting(lambda: fwd(engine, device, cs[2]))
    grads = grads_for(0)
    g = fused_loop.backward(device, first.saved, *grads)
    plain = [a.view(np.ndarray) for a in outputs(first, g)]
    counters = engine.snapshot()
    del first, second, third, g, engine, device
    gc.collect()
    assert_close(plain, ref(cs[0], grads))
    return counters


@pytest.mark.parametrize("per_thread_default", [False, True])
def test_a_record_copied_out_on_one_stream_and_back_on_another_is_freed_after_its_reads(
        per_thread_default):
    """The copies `_evict` makes belong to the pool arena of the evicting call's stream.
    The record's backward on another stream reads them (copying them back into a plan) and
    then drops them: the host must wait for those reads first, or that stream's next
    allocation could take the memory while they still run."""
    cuda = _Cuda(per_thread_default)
    other = cuda.Stream()

    def on_other(fn):
        if per_thread_default:  # another thread's per-thread default stream
            return run_in_thread(fn)
        with other:
            return fn()

    counters = _record_copied_out_and_back(cuda, on_other)
    assert (counters["record_copies"], counters["record_restores"]) == (2, 1)
    assert unsafe_frees(cuda.log) == []


def test_a_record_copied_out_and_back_on_one_stream_waits_for_nothing():
    cuda = _Cuda(per_thread_default=False)
    counters = _record_copied_out_and_back(cuda, lambda fn: fn())
    assert (counters["record_copies"], counters["record_restores"]) == (2, 1)
    assert not any(isinstance(e, _Waited) for e in cuda.log)
    assert sum(e[0] == "record" for e in cuda.log) == 4  # after each call's use of its plan
    assert unsafe_frees(cuda.log) == []


@pytest.mark.parametrize("per_thread_default", [False, True])
def test_a_records_own_arrays_read_by_a_backward_on_another_stream_are_freed_after_the_reads(
        per_thread_default):
    """The arrays a record holds that are not its plan's (x, h0, c0: the layer made them on the
    forward's stream) are read by a backward on another stream and freed when the record
    goes: the host must have waited for those reads by then."""
    cuda = _Cuda(per_thread_default)
    other = cuda.Stream()
    engine, device = LoopEngine(mode=lambda: "eager"), _kernel_loop_device(cuda)
    w, x, mask, h0, c0, spec, drop = _args(cases(1, mask_kind="left")[0])

    def on_device(a):
        out = device.xp.empty(a.shape, a.dtype)
        out.view(np.ndarray)[...] = a
        return out

    res = fused_loop.forward(device, engine, w, on_device(x), mask, on_device(h0),
                             on_device(c0), spec, drop, True)

    def backward():
        if per_thread_default:  # another thread's per-thread default stream
            return run_in_thread(lambda: fused_loop.backward(device, res.saved, *grads_for(0)))
        with other:
            return fused_loop.backward(device, res.saved, *grads_for(0))

    g = backward()
    del res, g, engine, device
    gc.collect()
    assert unsafe_frees(cuda.log) == []


def test_a_backward_on_its_forwards_stream_waits_for_nothing():
    cuda = _Cuda(per_thread_default=False)
    engine, device = LoopEngine(mode=lambda: "eager"), _kernel_loop_device(cuda)
    res = fwd(engine, device, cases(1)[0])
    fused_loop.backward(device, res.saved, *grads_for(0))
    assert not any(isinstance(e, _Waited) for e in cuda.log)


# --- the cuDNN path: backward on another thread -------------------------------------------------


def test_cudnn_backward_after_a_forward_on_another_threads_per_thread_stream():
    """No event can be recorded on another thread's per-thread stream, nor can that stream be
    made to wait: the forward records its end on its own stream, the backward waits for that
    event, and the host waits for the backward before the forward's buffers (in the forward
    thread's pool arena) can be freed."""
    from fake_cudnn import FakeStream, fake_core

    core, cp, _ = fake_core()
    cuda = _Cuda(per_thread_default=True)

    class PerThread(FakeStream):
        def record(self, event=None):
            event = cuda.Event() if event is None else event
            event.record(self)
            return event

        def wait_event(self, event):
            cuda.log.append(("wait", _actual(self.ptr), event.recorded_on))

    cp._streams[:] = [PerThread(cp, 2)]
    cp.cuda.Event = cuda.Event
    rng = np.random.default_rng(3)
    T, B, F, U = 4, 3, 2, 5
    x = cp.asarray(rng.normal(size=(T, B, F)))
    h0, c0 = cp.zeros((B, U)), cp.zeros((B, U))
    layout = core.weight_layout(x, U)
    ws = cp.asarray(rng.normal(size=layout.elements))
    lengths = np.full(B, T, np.int32)
    *_, token = core.forward(ws, x, lengths, h0, c0, True)
    assert cuda.log == [("record", _actual(2))]
    there = run_in_thread(lambda: (core.backward(token, cp.zeros((T, B, U)), cp.zeros((B, U)),
                                              cp.zeros((B, U))), _actual(2))[1])
    assert cuda.log[1:] == [("wait", there, _actual(2)), ("record", there),
                            ("host waits for", there)]
    cuda.log.clear()
    *_, token = core.forward(ws, x, lengths, h0, c0, True)
    core.backward(token, cp.zeros((T, B, U)), cp.zeros((B, U)), cp.zeros((B, U)))
    assert cuda.log == [("record", _actual(2))]  # the same thread's stream: no wait
