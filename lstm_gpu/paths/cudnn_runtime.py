"""The cuDNN runner: front-aligned batches with per-sample lengths through cuDNN 9's v8 RNN API.

`CudnnCore` is what the glue in `paths/cudnn.py` drives: `weight_layout` (where cuDNN wants
each weight block), `forward(ws, x, lengths, h0, c0, training)` on a packed weight space, and
`backward(token, dy, dhy, dcy)` returning dx, dhx, dcx and the flat weight gradient.

Calls: SEQ_MAJOR_UNPACKED, PADDED_IO_ENABLED, one unidirectional layer, DOUBLE_BIAS, algo
STANDARD, projSize = hidden. fp32 uses FMA math (no TF32) unless ``LSTM_GPU_ALLOW_TF32=1``;
fp64 default math; fp16 tensor-op math with fp32 math precision. backward runs
`cudnnRNNBackwardData_v8` then `cudnnRNNBackwardWeights_v8` (into a zeroed buffer,
WGRAD_MODE_ADD) on the forward's reserve space, once per training forward.

What is kept across calls, and why it is safe:

- Per (thread, device) `_Context`: the cuDNN handle (`api.get_handle`: handles must not be
  shared by threads), RNN descriptors and weight layouts per (dtype, F, U, math), data
  descriptors per (T, B, lengths) (LRU). Descriptors are host objects; a thread only uses its
  own, so a backward on another thread than its forward looks the same keys up in its own
  context (and checks that cuDNN reports the same layout there).
- Device lengths (cuDNN's devSeqLengths) per (stream, lengths), LRU (`StreamKeyedCache`).
  CuPy's pool is stream-aware: an allocation comes from the arena of the current stream and
  a freed block goes back to the arena of the stream that allocated it (cupy/cuda/memory.pyx
  @6b6d956: `SingleDeviceMemoryPool._malloc` picks `_arena(stream_ident)` of the current
  stream, `free` returns the chunk to `chunk.arena`). A buffer only ever read on the stream
  that allocated it is therefore ordered with any reuse of its memory; entries are never
  handed to another stream, and a dead stream's entry is dropped (a new stream may get the
  same handle value).
- Nothing else: the weight space is packed per call (`cudnn_weights`), the work space is
  allocated per call, and the temp-space sizes are queried before each forward and again
  before backward, as PyTorch does (aten/src/ATen/native/cudnn/RNN.cpp @00fc08a,
  `_cudnn_rnn_backward_weight`: cudnnGetRNNTempSpaceSizes with CUDNN_FWD_MODE_TRAINING);
  the reserve space stays the forward's.

Streams: work goes to CuPy's current stream, set on the handle at every call. A backward on
another stream than its forward is ordered with events both ways (`ordered_after`). Another
thread's per-thread default stream cannot be named from here, so a forward on a per-thread
stream records its end in the token, and a backward on another thread waits for that event
and, since the forward's stream cannot wait for it, finishes before it returns.

Operands: every pointer given to cuDNN is C-contiguous, of the data dtype and 16-byte aligned
(`device_operand` copies otherwise). cuDNN 9's RNN reference states no alignment rule; its 7.6
release notes list "at a minimum 4-byte alignment" for tensor pointers and cuDNN reports
CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER, so we give it what fresh CuPy buffers have (the
pool allocates in 512-byte units, cupy/cuda/memory.pyx: ALLOCATION_UNIT_SIZE): only views,
such as a time-major ``x[1:]``, are ever copied.
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..cuda.streams import PER_THREAD, of_another_thread, stream_key
from .cudnn_weights import Block, WeightLayout, weight_layout

ENV_ALLOW_TF32 = "LSTM_GPU_ALLOW_TF32"
ALIGNMENT = 16  # bytes
DATA_CACHE_SIZE = 32
LENGTHS_CACHE_SIZE = 32


def math_mode(dtype) -> tuple[int, int]:
    """(mathPrec, mathType) for a data dtype."""
    from ..cuda.cudnn import _bindings as B

    dt = np.dtype(dtype)
    if dt == np.float16:
        return B.DATA_FLOAT, B.TENSOR_OP_MATH
    if dt == np.float64:
        return B.DATA_DOUBLE, B.DEFAULT_MATH
    tf32 = os.environ.get(ENV_ALLOW_TF32, "") not in ("", "0")
    return B.DATA_FLOAT, (B.DEFAULT_MATH if tf32 else B.FMA_MATH)


def plan_key(dtype, features: int, units: int) -> tuple:
    """What an RNN descriptor depends on: (dtype, F, U, (mathPrec, mathType))."""
    return (np.dtype(dtype).str, int(features), int(units), math_mode(dtype))


# --- decisions (pure; tested on the host) -----------------------------------------------------


def needs_copy(ptr: int, c_contiguous: bool, same_dtype: bool) -> bool:
    """Whether an operand must be copied before cuDNN sees its pointer."""
    return not (c_contiguous and same_dtype and ptr % ALIGNMENT == 0)


def device_operand(cp, a, dtype):
    """`a` itself when cuDNN can take its pointer, else a fresh aligned C-contiguous copy."""
    dt = np.dtype(dtype)
    if not needs_copy(a.data.ptr, a.flags.c_contiguous, a.dtype == dt):
        return a
    out = cp.empty(a.shape, dt)
    out[...] = a
    return out


def backward_space_sizes(queried: tuple[int, int], forward_reserve: int) -> tuple[int, int]:
    """(work bytes, reserve bytes) for backward: the fresh query's work space, the forward's
    reserve space (which holds what backward reads; cuDNN must not ask for more)."""
    work, reserve = queried
    if reserve > forward_reserve:
        raise RuntimeError(
            f"cuDNN asks for a {reserve}-byte reserve space in backward, but its forward "
            f"kept {forward_reserve} bytes")
    return work, forward_reserve


class StreamKeyedCache:
    """LRU of values made for one stream: `get` never returns what was made for another
    stream object (a dead stream's entry is dropped even when a new stream reuses its handle).

    stream: a CuPy stream (anything with `.ptr` that supports weak references).
    """

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict = OrderedDict()

    def get(self, stream, key, make: Callable[[], Any]):
        slot = (stream.ptr, key)
        entry = self._entries.pop(slot, None)
        if entry is None or entry[0]() is not stream:
            entry = (weakref.ref(stream), make())
        self._entries[slot] = entry
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return entry[1]

    def __len__(self) -> int:
        return len(self._entries)


@contextmanager
def ordered_after(forward_stream, current_stream, make_event: Callable[[], Any],
                  forward_key: Optional[tuple] = None, forward_done: Any = None):
    """Run the body (a backward) on `current_stream` after the work of `forward_stream`.

    Same stream: nothing to do. Otherwise the current stream waits for an event recorded on
    the forward stream, and when the body is done the forward stream waits for one recorded
    on the current stream, so that the forward's buffers, which go back to the forward
    stream's pool arena, are not reused while the backward still reads them.

    forward_key: the forward stream's `streams.stream_key`, taken in the forward's thread
    (default: taken here). Another thread's per-thread default stream can neither get an
    event nor wait from this thread: then the body waits for `forward_done` (an event the
    forward recorded on its stream), and the host waits for the body's end.
    """
    forward_key = stream_key(forward_stream) if forward_key is None else forward_key
    if forward_key == stream_key(current_stream):
        yield
        return
    if of_another_thread(forward_key):
        current_stream.wait_event(forward_done)
        try:
            yield
        finally:
            current_stream.record(make_event()).synchronize()
        return
    current_stream.wait_event(forward_stream.record(make_event()))
    try:
        yield
    finally:
        forward_stream.wait_event(current_stream.record(make_event()))


class ThreadContexts:
    """One context per (thread, device), made by ``factory(device_id)`` on first use."""

    def __init__(self, factory: Callable[[int], Any]):
        self._factory = factory
        self._local = threading.local()

    def get(self, device_id: int):
        contexts = self._local.__dict__.setdefault("contexts", {})
        ctx = contexts.get(device_id)
        if ctx is None:
            ctx = contexts[device_id] = self._factory(device_id)
        return ctx


# --- one thread's cuDNN state on one device ---------------------------------------------------


class _RnnPlan:
    """RNN descriptor, weight-space size and layout for one `plan_key`."""

    def __init__(self, ctx: "_Context", key: tuple):
        api = ctx.api
        dtype, features, units, math = key
        self.dtype = np.dtype(dtype)
        self.features, self.units = features, units
        self.rnn = api.RNNDescriptor().set(
            input_size=features, hidden_size=units, data_type=api.data_type(self.dtype),
            math_prec=math[0], math_type=math[1], dropout=ctx.dropout)
        self.ws_bytes = api.weight_space_size(ctx.handle, self.rnn)
        elements = self.ws_bytes // self.dtype.itemsize
        blocks = self._query_blocks(ctx, ctx.cp.empty(max(elements, 1), self.dtype))
        self.layout: WeightLayout = weight_layout(blocks, elements, features, units)

    def _query_blocks(self, ctx: "_Context", probe) -> dict[int, Block]:
        """cudnnGetRNNWeightParams only does pointer arithmetic on `probe`'s address."""
        api = ctx.api
        item = self.dtype.itemsize
        base = probe.data.ptr
        blocks = {}
        with api.TensorDescriptor() as mdesc, api.TensorDescriptor() as bdesc:
            for lin in range(8):
                m_addr, b_addr = api.weight_params(ctx.handle, self.rnn, lin, self.ws_bytes,
                                                   base, mdesc, bdesc)
                _, mdims, _ = mdesc.get()
                _, bdims, _ = bdesc.get()
                rows, cols = (mdims[-2], mdims[-1]) if len(mdims) >= 2 else (0, 0)
                blocks[lin] = Block((m_addr - base) // item, (rows, cols),
                                    (b_addr - base) // item, int(np.prod(bdims)))
        return blocks


class _DataPlan:
    """x/y data descriptors and h/c tensor descriptors for one (plan, T, B, lengths)."""

    def __init__(self, ctx: "_Context", plan: _RnnPlan, steps: int, batch: int,
                 lengths: np.ndarray):
        from ..cuda.cudnn import _bindings as B

        api, dt = ctx.api, plan.dtype
        common = dict(dtype=dt, layout=B.SEQ_MAJOR_UNPACKED, max_seq_length=steps,
                      batch_size=batch, lengths=lengths)
        self.x_desc = api.RNNDataDescriptor().set(vector_size=plan.features, **common)
        self.y_desc = api.RNNDataDescriptor().set(vector_size=plan.units, **common)
        self.h_desc = api.TensorDescriptor().set(dt, (1, batch, plan.units))
        self.c_desc = api.TensorDescriptor().set(dt, (1, batch, plan.units))


class _Context:
    """One thread's cuDNN state on one device (`cp` and `api` are CuPy and the binding)."""

    def __init__(self, device_id: int, cp: Any = None, api: Any = None):
        if cp is None:
            from .._xp import cupy_module

            cp = cupy_module()
        if api is None:
            from ..cuda.cudnn import api
        self.cp, self.api, self.device_id = cp, api, device_id
        self.handle = api.get_handle(device_id)
        self.dropout = api.DropoutDescriptor().set_disabled(self.handle)
        self._plans: dict[tuple, _RnnPlan] = {}
        self._data: OrderedDict = OrderedDict()
        self._lengths = StreamKeyedCache(LENGTHS_CACHE_SIZE)

    def plan(self, key: tuple) -> _RnnPlan:
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _RnnPlan(self, key)
        return plan

    def data_plan(self, plan: _RnnPlan, steps: int, batch: int,
                  lengths: np.ndarray) -> _DataPlan:
        key = (id(plan), steps, batch, lengths.tobytes())
        dp = self._data.pop(key, None) or _DataPlan(self, plan, steps, batch, lengths)
        self._data[key] = dp
        while len(self._data) > DATA_CACHE_SIZE:
            self._data.popitem(last=False)
        return dp

    def device_lengths(self, stream, lengths: np.ndarray):
        """cuDNN's devSeqLengths for `stream`: int32 (B,), uploaded once per stream."""
        return self._lengths.get(stream, lengths.tobytes(),
                                 lambda: self.cp.asarray(lengths, dtype=np.int32))

    def bind(self):
        """CuPy's current stream, now also the handle's."""
        stream = self.cp.cuda.get_current_stream()
        self.handle.set_stream(stream.ptr)
        return stream


def _ptr(a) -> Optional[int]:
    return a.data.ptr if a is not None and a.size else None


@dataclass
class _Token:
    """What one training forward leaves for its backward (reserve space included)."""

    device_id: int
    stream: Any  # the forward's CuPy stream (kept alive until backward)
    key: tuple
    layout: WeightLayout
    lengths: np.ndarray
    dev_lengths: Any
    ws: Any
    x: Any
    hx: Any
    cx: Any
    y: Any
    reserve: Any
    reserve_bytes: int
    used: bool = False
    stream_id: tuple = ()  # streams.stream_key of `stream`, in the forward's thread
    done: Any = None  # an event at the forward's end, on a per-thread default stream only


class CudnnCore:
    """Runs front-aligned batches with per-sample lengths (>= 1) through cuDNN.

    contexts: per-thread `_Context`s (`ThreadContexts(_Context)` by default).
    """

    def __init__(self, contexts: Optional[ThreadContexts] = None):
        self.contexts = contexts if contexts is not None else ThreadContexts(_Context)

    def weight_layout(self, x, units: int) -> WeightLayout:
        device_id = x.device.id
        ctx = self.contexts.get(device_id)
        with ctx.cp.cuda.Device(device_id):
            return ctx.plan(plan_key(x.dtype, x.shape[2], units)).layout

    def forward(self, ws, x, lengths: np.ndarray, h0, c0, training: bool):
        """(y (T, B, U), hy, cy, token) for x (T, B, F) front-aligned, `lengths` (B,) >= 1."""
        from ..cuda.cudnn import _bindings as B

        steps, batch, features = x.shape
        dt = np.dtype(x.dtype)
        device_id = x.device.id
        ctx = self.contexts.get(device_id)
        cp, api = ctx.cp, ctx.api
        with cp.cuda.Device(device_id):
            key = plan_key(dt, features, h0.shape[1])
            plan = ctx.plan(key)
            data = ctx.data_plan(plan, steps, batch, lengths)
            if ws.size * ws.dtype.itemsize != plan.ws_bytes:
                raise ValueError(f"weight space of {ws.nbytes} bytes, cuDNN wants "
                                 f"{plan.ws_bytes}")
            stream = ctx.bind()
            dev_lengths = ctx.device_lengths(stream, lengths)
            ws, x_c, hx, cx = (device_operand(cp, a, dt) for a in (ws, x, h0, c0))
            y = cp.empty((steps, batch, plan.units), dt)
            hy, cy = cp.empty_like(hx), cp.empty_like(cx)
            mode = B.FWD_MODE_TRAINING if training else B.FWD_MODE_INFERENCE
            work_bytes, reserve_bytes = api.temp_space_sizes(ctx.handle, plan.rnn, mode,
                                                             data.x_desc)
            work = cp.empty(work_bytes, np.uint8)
            reserve = cp.empty(reserve_bytes, np.uint8) if training else None
            api.rnn_forward(ctx.handle, plan.rnn, mode, _ptr(dev_lengths), data.x_desc,
                            _ptr(x_c), data.y_desc, _ptr(y), data.h_desc, _ptr(hx), _ptr(hy),
                            data.c_desc, _ptr(cx), _ptr(cy), plan.ws_bytes, _ptr(ws),
                            work_bytes, _ptr(work), reserve_bytes if training else 0,
                            _ptr(reserve))
            stream_id, done = stream_key(stream), None
            if training and stream_id[0] == PER_THREAD:  # no other thread can record on it
                done = stream.record(cp.cuda.Event(disable_timing=True))
        token = None
        if training:
            token = _Token(device_id, stream, key, plan.layout, lengths, dev_lengths, ws, x_c,
                           hx, cx, y, reserve, reserve_bytes, stream_id=stream_id, done=done)
        return y, hy, cy, token

    def backward(self, token: _Token, dy, dhy, dcy):
        """(dx, dhx, dcx, dws): dws is the flat weight-space gradient."""
        from ..cuda.cudnn import _bindings as B

        if token.used:
            raise RuntimeError("cuDNN backward can run once per training forward; "
                               "call the layer again with training=True")
        token.used = True
        ctx = self.contexts.get(token.device_id)  # this thread's handle and descriptors
        cp, api = ctx.cp, ctx.api
        dt = token.x.dtype
        with cp.cuda.Device(token.device_id):
            plan = ctx.plan(token.key)
            if plan.layout != token.layout:
                raise RuntimeError("cuDNN reports another weight layout on this thread than "
                                   "on the thread that ran the forward")
            data = ctx.data_plan(plan, token.x.shape[0], token.x.shape[1], token.lengths)
            stream = ctx.bind()
            with ordered_after(token.stream, stream,
                               lambda: cp.cuda.Event(disable_timing=True), token.stream_id,
                               token.done):
                dy_c, dhy_c, dcy_c = (device_operand(cp, a, dt) for a in (dy, dhy, dcy))
                dx = cp.empty_like(token.x)
                dhx, dcx = cp.empty_like(token.hx), cp.empty_like(token.cx)
                work_bytes, reserve_bytes = backward_space_sizes(
                    api.temp_space_sizes(ctx.handle, plan.rnn, B.FWD_MODE_TRAINING,
                                         data.x_desc), token.reserve_bytes)
                work = cp.empty(work_bytes, np.uint8)
                lens = _ptr(token.dev_lengths)
                api.rnn_backward_data(ctx.handle, plan.rnn, lens, data.y_desc, _ptr(token.y),
                                      _ptr(dy_c), data.x_desc, _ptr(dx), data.h_desc,
                                      _ptr(token.hx), _ptr(dhy_c), _ptr(dhx), data.c_desc,
                                      _ptr(token.cx), _ptr(dcy_c), _ptr(dcx), plan.ws_bytes,
                                      _ptr(token.ws), work_bytes, _ptr(work), reserve_bytes,
                                      _ptr(token.reserve))
                dws = cp.zeros(plan.layout.elements, dt)
                api.rnn_backward_weights(ctx.handle, plan.rnn, lens, data.x_desc,
                                         _ptr(token.x), data.h_desc, _ptr(token.hx),
                                         data.y_desc, _ptr(token.y), plan.ws_bytes, _ptr(dws),
                                         work_bytes, _ptr(work), reserve_bytes,
                                         _ptr(token.reserve), mode=B.WGRAD_MODE_ADD)
        token.reserve = token.ws = None  # the token is spent; free them early
        return dx, dhx, dcx, dws
