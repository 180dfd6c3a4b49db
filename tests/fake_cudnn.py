"""A NumPy model of the slice of CuPy and of cuDNN's RNN API that `CudnnCore` uses.

It lets `lstm_gpu.paths.cudnn_runtime.CudnnCore` run on the CPU, pointers and all:

- `FakeCupy`: "device memory" is NumPy buffers registered by address; arrays are `DevArray`
  (NumPy with CuPy's ``.data.ptr`` and ``.device``); streams and events record what is asked
  of them. Like CuPy, fresh allocations are 512-byte aligned.
- `FakeCudnnApi`: the functions of `lstm_gpu.cuda.cudnn.api` that the runtime calls, with
  cuDNN's contract as documented (cudnn_adv.h, and the cuDNN 9 RNN notes in the project's
  reference): it resolves every pointer it is given back to memory, computes with the NumPy
  stand-in `lstm_reference.FrontAlignedCore`, writes the outputs there, and refuses what
  cuDNN refuses: misaligned pointers, a work space smaller than the library asks for *now*,
  a reserve space other than the forward's, backward weights before backward data, and
  handles or descriptors used by another thread than the one that created them. Every call
  is recorded (name, thread, stream) for the tests.

This checks our plumbing (which buffer goes where, sizes, threads, streams); what cuDNN itself
computes is checked on a GPU (tests/gpu/test_cudnn_path.py).
"""
from __future__ import annotations

import threading
import types

import numpy as np

import lstm_reference as ref
from lstm_gpu.cuda.cudnn import api as real_api
from lstm_gpu.errors import CudnnError
from lstm_gpu.paths import cudnn_weights as cw

ALLOC_ALIGN = 512


class DevArray(np.ndarray):
    """A NumPy array standing for a CuPy array in fake device memory (device 0)."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)

    @property
    def device(self):
        return FakeDevice(0)


class FakeDevice:
    def __init__(self, device_id):
        self.id = device_id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


class FakeEvent:
    def __init__(self, *args, **kwargs):
        self.recorded_on = None


class FakeStream:
    def __init__(self, cp, ptr):
        self.cp, self.ptr = cp, ptr

    def record(self, event=None):
        event = FakeEvent() if event is None else event
        event.recorded_on = self.ptr
        self.cp.log.append(("record", self.ptr))
        return event

    def wait_event(self, event):
        self.cp.log.append(("wait", self.ptr, event.recorded_on))

    def __enter__(self):
        self.cp._streams.append(self)
        return self

    def __exit__(self, *exc):
        self.cp._streams.pop()


class FakeCupy:
    """The CuPy functions the runtime uses, on registered NumPy buffers."""

    def __init__(self):
        self._buffers = {}  # base address -> uint8 buffer
        self._lock = threading.Lock()
        self.log = []
        self._next_stream = 1000
        self.null = FakeStream(self, 0)
        self._streams = [self.null]
        self.cuda = types.SimpleNamespace(Device=FakeDevice, Event=FakeEvent,
                                          get_current_stream=lambda: self._streams[-1],
                                          Stream=self.new_stream)

    def new_stream(self, **kwargs):
        self._next_stream += 16
        return FakeStream(self, self._next_stream)

    def _alloc(self, nbytes):
        raw = np.zeros(max(int(nbytes), 1) + ALLOC_ALIGN, np.uint8)
        start = -raw.ctypes.data % ALLOC_ALIGN
        buf = raw[start:start + max(int(nbytes), 1)]
        with self._lock:
            self._buffers[buf.ctypes.data] = buf
        return buf

    def empty(self, shape, dtype=np.float64):
        shape = (shape,) if np.isscalar(shape) else tuple(shape)
        dt = np.dtype(dtype)
        buf = self._alloc(int(np.prod(shape, dtype=np.int64)) * dt.itemsize)
        return np.ndarray(shape, dt, buffer=buf).view(DevArray)

    def zeros(self, shape, dtype=np.float64):
        out = self.empty(shape, dtype)
        out[...] = 0
        return out

    def empty_like(self, a):
        return self.empty(a.shape, a.dtype)

    def asarray(self, a, dtype=None):
        dt = np.dtype(a.dtype if dtype is None else dtype)
        if isinstance(a, DevArray) and a.dtype == dt:
            return a
        out = self.empty(np.shape(a), dt)
        out[...] = a
        return out

    def resolve(self, ptr, dtype, shape):
        """The registered memory at `ptr` as an array of `dtype` and `shape` (a view)."""
        dt = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        with self._lock:
            for base, buf in self._buffers.items():
                if base <= ptr and ptr + nbytes <= base + buf.size:
                    return np.ndarray(shape, dt, buffer=buf, offset=ptr - base)
        raise AssertionError(f"pointer {ptr:#x} ({nbytes} bytes) is not in device memory")


# --- cuDNN ------------------------------------------------------------------------------------


class _Owned:
    """A cuDNN object that remembers the thread that created it."""

    def __init__(self, *args, **kwargs):
        self.owner = threading.get_ident()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


class FakeHandle(_Owned):
    def __init__(self, device_id):
        super().__init__()
        self.device_id = device_id
        self.stream = None

    def set_stream(self, ptr):
        self.stream = ptr


class FakeDropout(_Owned):
    def set_disabled(self, handle):
        return self


class FakeRNN(_Owned):
    def set(self, **kw):
        self.kw = kw
        return self


class FakeTensor(_Owned):
    dims = ()

    def set(self, dtype, dims):
        self.dtype, self.dims = np.dtype(dtype), tuple(dims)
        return self

    def get(self):
        return 0, list(self.dims), []


class FakeData(_Owned):
    def set(self, *, dtype, layout, max_seq_length, batch_size, vector_size, lengths):
        self.dtype, self.steps, self.batch = np.dtype(dtype), max_seq_length, batch_size
        self.vector, self.lengths = vector_size, np.array(lengths, np.int32)
        return self


_DTYPES = {v: k for k, v in real_api.DATA_TYPES.items()}


class FakeCudnnApi:
    """`lstm_gpu.cuda.cudnn.api` as far as `CudnnCore` uses it (see the module docstring).

    work_bytes / reserve_bytes: what `temp_space_sizes` answers now (and what the RNN calls
    then require). layout: a `cudnn_weights.WeightLayout` to report instead of the canonical
    one (keyed by nothing: for one (F, U) per test).
    """

    DATA_TYPES = real_api.DATA_TYPES
    data_type = staticmethod(real_api.data_type)
    RNNDescriptor, TensorDescriptor, RNNDataDescriptor = FakeRNN, FakeTensor, FakeData
    DropoutDescriptor = FakeDropout

    def __init__(self, cp: FakeCupy, layout=None):
        self.cp = cp
        self.layout = layout
        self.work_bytes, self.reserve_bytes = 1024, 4096
        self.calls = []
        self._local = threading.local()
        self._pending = {}  # reserve address -> [stand-in token, dws or None, reserve bytes]

    # handles and sizes
    def get_handle(self, device_id):
        handle = getattr(self._local, "handle", None)
        if handle is None:
            handle = self._local.handle = FakeHandle(device_id)
        return handle

    def _shape(self, rnn):
        kw = rnn.kw
        return _DTYPES[kw["data_type"]], kw["input_size"], kw["hidden_size"]

    def _layout(self, rnn):
        dt, f, u = self._shape(rnn)
        if self.layout is not None:
            return self.layout
        return cw.weight_layout(cw.canonical_layout(f, u), cw.weight_space_elements(f, u), f, u)

    def weight_space_size(self, handle, rnn):
        self._own(handle, rnn)
        return self._layout(rnn).elements * self._shape(rnn)[0].itemsize

    def weight_params(self, handle, rnn, lin, ws_size, base, mdesc, bdesc):
        self._own(handle, rnn, mdesc, bdesc)
        blk = self._layout(rnn).blocks[lin]
        item = self._shape(rnn)[0].itemsize
        mdesc.dims, bdesc.dims = (1,) + tuple(blk.m_shape), (1, blk.b_size, 1)
        return base + blk.m_offset * item, base + blk.b_offset * item

    def temp_space_sizes(self, handle, rnn, mode, x_desc):
        self._own(handle, rnn, x_desc)
        self._record("temp_space_sizes", handle, mode=mode)
        return self.work_bytes, (self.reserve_bytes if mode == 1 else 0)

    # the RNN calls
    def _own(self, *objects):
        me = threading.get_ident()
        for obj in objects:
            if obj.owner != me:
                raise AssertionError(f"{type(obj).__name__} of thread {obj.owner} used by {me}")

    def _record(self, name, handle, **info):
        self.calls.append(dict(name=name, thread=threading.get_ident(), handle=handle,
                               stream=handle.stream, **info))

    def _check(self, handle, rnn, work_size, *ptrs):
        if work_size < self.work_bytes:
            raise CudnnError(2006, "CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT",
                             f"work space {work_size} < {self.work_bytes}")
        for p in ptrs:
            if p is not None and p % 16:
                raise CudnnError(2003, "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER", hex(p))

    def _arrays(self, rnn, x_desc, lengths_ptr, x_ptr, hx, cx, ws_ptr):
        dt, f, u = self._shape(rnn)
        t, b = x_desc.steps, x_desc.batch
        lengths = self.cp.resolve(lengths_ptr, np.int32, (b,))
        assert np.array_equal(lengths, x_desc.lengths), "devSeqLengths != the descriptor's"
        arrays = [self.cp.resolve(x_ptr, dt, (t, b, f))]
        arrays += [self.cp.resolve(p, dt, (b, u)) for p in (hx, cx)]
        arrays.append(self.cp.resolve(ws_ptr, dt, (self._layout(rnn).elements,)))
        return arrays, x_desc.lengths

    def rnn_forward(self, handle, rnn, mode, dev_lengths, x_desc, x, y_desc, y, h_desc, hx,
                    hy, c_desc, cx, cy, ws_size, ws, work_size, work, reserve_size, reserve):
        self._own(handle, rnn, x_desc, y_desc, h_desc, c_desc)
        self._record("rnn_forward", handle, mode=mode, work=work_size, reserve=reserve_size,
                     x=x)
        self._check(handle, rnn, work_size, x, y, hx, hy, cx, cy, ws, work, reserve)
        (xa, h0, c0, wsa), lengths = self._arrays(rnn, x_desc, dev_lengths, x, hx, cx, ws)
        core = ref.FrontAlignedCore(self._layout(rnn))
        ya, hya, cya, token = core.forward(wsa, xa, lengths, h0, c0, mode == 1)
        dt, _, u = self._shape(rnn)
        self.cp.resolve(y, dt, ya.shape)[...] = ya
        self.cp.resolve(hy, dt, hya.shape)[...] = hya
        self.cp.resolve(cy, dt, cya.shape)[...] = cya
        if mode == 1:
            if reserve_size < self.reserve_bytes:
                raise CudnnError(2006, "CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT", "reserve")
            self._pending[reserve] = [(core, token), None, reserve_size]

    def rnn_backward_data(self, handle, rnn, dev_lengths, y_desc, y, dy, x_desc, dx, h_desc,
                          hx, dhy, dhx, c_desc, cx, dcy, dcx, ws_size, ws, work_size, work,
                          reserve_size, reserve):
        self._own(handle, rnn, x_desc, y_desc, h_desc, c_desc)
        self._record("rnn_backward_data", handle, work=work_size, reserve=reserve_size)
        self._check(handle, rnn, work_size, y, dy, dx, hx, dhy, dhx, cx, dcy, dcx, ws, work,
                    reserve)
        entry = self._pending.get(reserve)
        if entry is None or entry[2] != reserve_size:
            raise CudnnError(2000, "CUDNN_STATUS_BAD_PARAM", "not the forward's reserve space")
        (core, token), _, _ = entry
        dt, f, u = self._shape(rnn)
        t, b = x_desc.steps, x_desc.batch
        dya = self.cp.resolve(dy, dt, (t, b, u))
        dhya, dcya = (self.cp.resolve(p, dt, (b, u)) for p in (dhy, dcy))
        dxa, dhxa, dcxa, dws = core.backward(token, dya.copy(), dhya.copy(), dcya.copy())
        self.cp.resolve(dx, dt, dxa.shape)[...] = dxa
        self.cp.resolve(dhx, dt, dhxa.shape)[...] = dhxa
        self.cp.resolve(dcx, dt, dcxa.shape)[...] = dcxa
        entry[1] = dws

    def rnn_backward_weights(self, handle, rnn, dev_lengths, x_desc, x, h_desc, hx, y_desc, y,
                             ws_size, dws, work_size, work, reserve_size, reserve, mode=0):
        self._own(handle, rnn, x_desc, y_desc, h_desc)
        self._record("rnn_backward_weights", handle, work=work_size, reserve=reserve_size)
        self._check(handle, rnn, work_size, x, hx, y, dws, work, reserve)
        entry = self._pending.pop(reserve, None)
        if entry is None or entry[1] is None:
            raise CudnnError(2000, "CUDNN_STATUS_BAD_PARAM", "backward data must come first")
        dt = self._shape(rnn)[0]
        out = self.cp.resolve(dws, dt, (self._layout(rnn).elements,))
        assert mode == 0, "WGRAD_MODE_ADD"
        out += np.nan_to_num(entry[1])  # the stand-in poisons gaps between blocks


class OnFakeDevice:
    """Puts a NumPy glue's arrays into fake device memory around a `CudnnCore` (the layer
    hands the real path CuPy arrays; the tests' glue computes with NumPy)."""

    def __init__(self, core, cp: FakeCupy):
        self.core, self.cp = core, cp

    def weight_layout(self, x, units):
        return self.core.weight_layout(self.cp.asarray(x[:1, :1]), units)

    def forward(self, ws, x, lengths, h0, c0, training):
        up = self.cp.asarray
        return self.core.forward(up(ws), up(x), lengths, up(h0), up(c0), training)

    def backward(self, token, dy, dhy, dcy):
        up = self.cp.asarray
        return self.core.backward(token, up(dy), up(dhy), up(dcy))


def fake_core(layout=None):
    """(CudnnCore on a fake device, FakeCupy, FakeCudnnApi)."""
    from lstm_gpu.paths import cudnn_runtime as rt

    cp = FakeCupy()
    api = FakeCudnnApi(cp, layout)
    core = rt.CudnnCore(rt.ThreadContexts(lambda d: rt._Context(d, cp=cp, api=api)))
    return core, cp, api

