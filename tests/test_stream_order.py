"""Ordering GPU work across streams and threads: the GPU paths' decisions, on the host.

The stand-in below keeps CUDA's stream semantics that the decisions depend on: a stream is its
``ptr``, except ``cudaStreamPerThread`` (ptr 2; CUDA's ``driver_types.h`` line 121), which is
another stream in every host thread; an event is recorded on, and a wait is put on, the stream
its ``ptr`` names *in the calling thread*. In CuPy's per-thread-default-stream mode every
thread's current stream is the one ``Stream.ptds`` object (CuPy 14.2 ``cupy/cuda/stream.pyx``
lines 74 and 648). The log says which real stream each record and wait reached.
"""
from __future__ import annotations

import gc
import threading
import types

import numpy as np
import pytest

from lstm_gpu.cuda import streams
from lstm_gpu.paths.loop_engine import Plan


def _actual(ptr: int) -> tuple[int, int]:
    """The stream a ptr names in the calling thread (CUDA's rule, not lstm_gpu's code)."""
    return ptr, (threading.get_ident() if ptr == 2 else 0)


class _Event:
    def __init__(self, log, **kwargs):
        self.log, self.recorded_on = log, None

    def record(self, stream=None):
        self.recorded_on = _actual(stream.ptr)
        self.log.append(("record", self.recorded_on))

    def synchronize(self):
        self.log.append(("host waits for", self.recorded_on))


class _Stream:
    def __init__(self, cuda, ptr):
        self.cuda, self.ptr = cuda, ptr

    def record(self, event=None):
        event = self.cuda.Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        self.cuda.log.append(("wait", _actual(self.ptr), event.recorded_on))

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


def _in_thread(fn):
    out, errors = [], []

    def run():
        try:
            out.append(fn())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert not errors, errors
    return out[0]


def test_the_per_thread_stream_handle_is_cupys_and_cudas():
    cupy = pytest.importorskip("cupy")
    from cupy_backends.cuda.api import runtime

    assert streams.PER_THREAD == runtime.streamPerThread == cupy.cuda.Stream.ptds.ptr
    assert cupy.cuda.Stream.null.ptr == 0


def test_stream_keys():
    cuda = _Cuda(per_thread_default=True)
    mine = streams.stream_key(cuda.default)
    theirs = _in_thread(lambda: streams.stream_key(cuda.default))
    assert mine != theirs and mine[0] == theirs[0] == 2
    assert streams.of_another_thread(theirs) and not streams.of_another_thread(mine)
    null, other = _Stream(cuda, 0), cuda.Stream()
    assert streams.stream_key(null) == _in_thread(lambda: streams.stream_key(null))
    assert not streams.of_another_thread(_in_thread(lambda: streams.stream_key(other)))


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
    _in_thread(lambda: _use(device, plan))
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

    elsewhere = use_elsewhere() if not per_thread_default else _in_thread(
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
    there = _in_thread(lambda: (core.backward(token, cp.zeros((T, B, U)), cp.zeros((B, U)),
                                              cp.zeros((B, U))), _actual(2))[1])
    assert cuda.log[1:] == [("wait", there, _actual(2)), ("record", there),
                            ("host waits for", there)]
    cuda.log.clear()
    *_, token = core.forward(ws, x, lengths, h0, c0, True)
    core.backward(token, cp.zeros((T, B, U)), cp.zeros((B, U)), cp.zeros((B, U)))
    assert cuda.log == [("record", _actual(2))]  # the same thread's stream: no wait
