"""A thin, checked layer over the cuDNN 9 RNN API: status mapping, handles, descriptors.

Every wrapped call goes through `check_status`, which turns a non-zero status into
`CudnnError(status, name, message, call)` with cuDNN's own text (`cudnnGetLastErrorString`).
Objects own one cuDNN resource each and free it with `weakref.finalize` (`close()` frees it
early; they are context managers). Finalizers do not run at interpreter exit: destroying a
handle after the CUDA context is torn down can crash, and the OS reclaims everything anyway.

Handles: one per (device, thread), created lazily by `get_handle()` (cuDNN handles must not be
shared by threads, and bind to the device current at creation). The caller sets the stream
before each use (`Handle.set_stream`), so cuDNN runs in order with CuPy's current stream.
A failed `cudnnCreate` is remembered per device for the process: the first failure raises
its `CudnnError`, later requests for that device raise `CudnnNotAvailable` without trying
again (`handle_failure` says why), so a caller falling back warns once, not once per call.
"""
from __future__ import annotations

import ctypes
import threading
import weakref
from ctypes import byref, c_int, c_int32, c_size_t, c_uint32, c_void_p
from typing import Any, Optional, Sequence

import numpy as np

from ...errors import CudnnError, CudnnNotAvailable
from .._libload import Binding
from . import _bindings as B
from . import _loader

BINDING = Binding(_loader.LOADER, B.PROTOTYPES, B.STATUS_NAMES, "cudnnGetErrorString")


def functions():
    """The bound prototypes; raises `CudnnNotAvailable` when cuDNN does not load."""
    return BINDING.functions()


def version() -> int:
    """cuDNN's version number, e.g. 92800 for 9.28.0."""
    return int(functions().cudnnGetVersion())


def version_tuple() -> tuple[int, int, int]:
    v = version()
    return v // 10000, (v // 100) % 100, v % 100


def status_name(status: int) -> str:
    """`CUDNN_STATUS_...` for a status code (our table, else cuDNN's own string)."""
    return BINDING.status_name(status)


def last_error_message() -> str:
    """cuDNN's message for the last failed call of this thread ('' if none)."""
    try:
        buf = ctypes.create_string_buffer(1024)
        functions().cudnnGetLastErrorString(buf, len(buf))
        return buf.value.decode(errors="replace").strip()
    except CudnnNotAvailable:
        return ""


def check_status(status: int, call: str = "") -> None:
    """Raise `CudnnError` for a non-zero cuDNN status."""
    if status != 0:
        raise CudnnError(int(status), status_name(status), last_error_message(), call)


def _call(name: str, *args) -> None:
    check_status(getattr(functions(), name)(*args), name)


# --- dtypes --------------------------------------------------------------------------------

DATA_TYPES = {
    np.dtype(np.float16): B.DATA_HALF,
    np.dtype(np.float32): B.DATA_FLOAT,
    np.dtype(np.float64): B.DATA_DOUBLE,
}


def data_type(dtype: Any) -> int:
    """cudnnDataType_t of a NumPy dtype; TypeError for dtypes the RNN API does not take."""
    dt = np.dtype(dtype)
    if dt not in DATA_TYPES:
        raise TypeError(f"cuDNN RNNs support float16, float32 and float64, not {dt}")
    return DATA_TYPES[dt]


def host_scalar(dtype: Any, value: float = 0.0):
    """A ctypes host scalar holding `value` in `dtype`'s bit pattern (paddingFill)."""
    dt = np.dtype(dtype)
    raw = np.array(value, dtype=dt).view({2: np.uint16, 4: np.uint32, 8: np.uint64}[dt.itemsize])
    ctype = {2: ctypes.c_uint16, 4: ctypes.c_uint32, 8: ctypes.c_uint64}[dt.itemsize]
    return ctype(int(raw))


def _int_array(values: Sequence[int]):
    values = [int(v) for v in values]
    return (c_int * max(len(values), 1))(*values)


# --- owned resources ----------------------------------------------------------------------


def _destroy(destroy_name: str, ptr: int) -> None:
    fns = BINDING.bound()
    if fns is not None and ptr:
        getattr(fns, destroy_name)(c_void_p(ptr))  # status ignored: nothing to do about it


class _Resource:
    """One cuDNN object: created in __init__, destroyed by close() or garbage collection."""

    _create = ""
    _destroy = ""

    def __init__(self) -> None:
        ptr = c_void_p()
        _call(self._create, byref(ptr))
        self._ptr = ptr.value
        self._finalizer = weakref.finalize(self, _destroy, self._destroy, self._ptr)
        self._finalizer.atexit = False

    @property
    def ptr(self) -> int:
        if not self._finalizer.alive:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._ptr

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        """Free the cuDNN object now; idempotent."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Handle(_Resource):
    """A cuDNN handle, bound to the device current when it was created."""

    _create = "cudnnCreate"
    _destroy = "cudnnDestroy"

    def __init__(self, device_id: int = -1) -> None:
        super().__init__()
        self.device_id = device_id
        self._stream: Optional[int] = None

    def set_stream(self, stream_ptr: int) -> None:
        """Make cuDNN work go to `stream_ptr` (0: legacy default stream)."""
        if stream_ptr != self._stream:
            _call("cudnnSetStream", self.ptr, c_void_p(stream_ptr or None))
            self._stream = stream_ptr

    def get_stream(self) -> int:
        out = c_void_p()
        _call("cudnnGetStream", self.ptr, byref(out))
        return out.value or 0


class TensorDescriptor(_Resource):
    _create = "cudnnCreateTensorDescriptor"
    _destroy = "cudnnDestroyTensorDescriptor"

    def set(self, dtype: Any, dims: Sequence[int], strides: Optional[Sequence[int]] = None):
        """Nd descriptor; default strides are packed (C order)."""
        dims = [int(d) for d in dims]
        if strides is None:
            strides = [int(np.prod(dims[i + 1:], dtype=np.int64)) for i in range(len(dims))]
        _call("cudnnSetTensorNdDescriptor", self.ptr, data_type(dtype), len(dims),
              _int_array(dims), _int_array(strides))
        return self

    def get(self, max_dims: int = 8) -> tuple[int, list[int], list[int]]:
        """(cudnnDataType_t, dims, strides)."""
        dt, nb = c_int(), c_int()
        dims, strides = (c_int * max_dims)(), (c_int * max_dims)()
        _call("cudnnGetTensorNdDescriptor", self.ptr, max_dims, byref(dt), byref(nb), dims,
              strides)
        n = min(nb.value, max_dims)
        return dt.value, list(dims[:n]), list(strides[:n])


class DropoutDescriptor(_Resource):
    """Needed by cudnnSetRNNDescriptor_v8; lstm_gpu runs one layer, so dropout is off."""

    _create = "cudnnCreateDropoutDescriptor"
    _destroy = "cudnnDestroyDropoutDescriptor"

    def set_disabled(self, handle: Handle):
        _call("cudnnSetDropoutDescriptor", self.ptr, handle.ptr, ctypes.c_float(0.0), None,
              0, 0)
        return self


_RNN_FIELDS = ("algo", "cell_mode", "bias_mode", "dir_mode", "input_mode", "data_type",
               "math_prec", "math_type", "input_size", "hidden_size", "proj_size",
               "num_layers", "dropout_desc", "aux_flags")


class RNNDescriptor(_Resource):
    _create = "cudnnCreateRNNDescriptor"
    _destroy = "cudnnDestroyRNNDescriptor"

    def set(self, *, input_size: int, hidden_size: int, data_type: int, math_prec: int,
            math_type: int, dropout: Optional[DropoutDescriptor] = None,
            algo: int = B.RNN_ALGO_STANDARD, cell_mode: int = B.LSTM,
            bias_mode: int = B.RNN_DOUBLE_BIAS, dir_mode: int = B.UNIDIRECTIONAL,
            input_mode: int = B.LINEAR_INPUT, proj_size: Optional[int] = None,
            num_layers: int = 1, aux_flags: int = B.RNN_PADDED_IO_ENABLED):
        """cudnnSetRNNDescriptor_v8 (projSize = hiddenSize: no projection)."""
        self._dropout = dropout  # keep alive as long as this descriptor
        _call("cudnnSetRNNDescriptor_v8", self.ptr, algo, cell_mode, bias_mode, dir_mode,
              input_mode, data_type, math_prec, math_type, input_size, hidden_size,
              hidden_size if proj_size is None else proj_size, num_layers,
              dropout.ptr if dropout is not None else None, aux_flags)
        return self

    def get(self) -> dict:
        ints = [c_int() for _ in range(8)] + [c_int32() for _ in range(4)]
        drop, aux = c_void_p(), c_uint32()
        _call("cudnnGetRNNDescriptor_v8", self.ptr, *[byref(v) for v in ints], byref(drop),
              byref(aux))
        values = [v.value for v in ints] + [drop.value or 0, aux.value]
        return dict(zip(_RNN_FIELDS, values))


class RNNDataDescriptor(_Resource):
    _create = "cudnnCreateRNNDataDescriptor"
    _destroy = "cudnnDestroyRNNDataDescriptor"

    def set(self, *, dtype: Any, layout: int, max_seq_length: int, batch_size: int,
            vector_size: int, lengths: Sequence[int], padding_fill: Optional[float] = 0.0):
        """`lengths` (host, one per sample) are copied by cuDNN; padding_fill None: no fill."""
        self._fill = None if padding_fill is None else host_scalar(dtype, padding_fill)
        fill_ptr = None if self._fill is None else ctypes.cast(byref(self._fill), c_void_p)
        _call("cudnnSetRNNDataDescriptor", self.ptr, data_type(dtype), layout,
              int(max_seq_length), int(batch_size), int(vector_size), _int_array(lengths),
              fill_ptr)
        return self

    def get(self, batch_size: int) -> dict:
        dt, layout, tmax, b, v = (c_int() for _ in range(5))
        lens = (c_int * max(batch_size, 1))()
        fill = ctypes.c_uint64(0)
        _call("cudnnGetRNNDataDescriptor", self.ptr, byref(dt), byref(layout), byref(tmax),
              byref(b), byref(v), batch_size, lens, ctypes.cast(byref(fill), c_void_p))
        return dict(data_type=dt.value, layout=layout.value, max_seq_length=tmax.value,
                    batch_size=b.value, vector_size=v.value,
                    lengths=list(lens[:min(batch_size, b.value)]), padding_fill_bits=fill.value)


# --- per (device, thread) handles -----------------------------------------------------------

_local = threading.local()
_failed_lock = threading.Lock()
_failed_handles: dict[int, CudnnError] = {}


def current_device_id() -> int:
    from ..._xp import cupy_module

    cp = cupy_module()
    if cp is None:
        raise CudnnNotAvailable("CuPy is not importable; " + _loader.INSTALL_HINT)
    return int(cp.cuda.runtime.getDevice())


def get_handle(device_id: Optional[int] = None) -> Handle:
    """This thread's handle for `device_id` (default: CuPy's current device)."""
    if device_id is None:
        device_id = current_device_id()
    handles = getattr(_local, "handles", None)
    if handles is None:
        handles = _local.handles = {}
    handle = handles.get(device_id)
    if handle is None:
        from ..._xp import cupy_module

        why = handle_failure(device_id)
        if why is not None:
            raise CudnnNotAvailable(why)
        try:
            with cupy_module().cuda.Device(device_id):
                handle = Handle(device_id)
        except CudnnError as e:
            with _failed_lock:
                _failed_handles.setdefault(device_id, e)
            raise
        handles[device_id] = handle
    return handle


def handle_failure(device_id: int) -> Optional[str]:
    """Why `cudnnCreate` failed earlier on `device_id` in this process, or None."""
    with _failed_lock:
        error = _failed_handles.get(device_id)
    if error is None:
        return None
    return f"cudnnCreate failed on device {device_id}: {error}"


def can_create_handle() -> tuple[bool, str]:
    """(True, '') when a handle can be created on the current device, else (False, why)."""
    try:
        get_handle()
        return True, ""
    except (CudnnError, CudnnNotAvailable) as e:
        return False, str(e)
    except Exception as e:  # CuPy/CUDA errors without a device
        return False, f"{type(e).__name__}: {e}"


# --- RNN calls (thin; pointers are ints, None for NULL) -------------------------------------


def weight_space_size(handle: Handle, rnn: RNNDescriptor) -> int:
    out = c_size_t()
    _call("cudnnGetRNNWeightSpaceSize", handle.ptr, rnn.ptr, byref(out))
    return out.value


def temp_space_sizes(handle: Handle, rnn: RNNDescriptor, fwd_mode: int,
                     x_desc: RNNDataDescriptor) -> tuple[int, int]:
    """(workspace bytes, reserve-space bytes) for this x descriptor and mode."""
    work, reserve = c_size_t(), c_size_t()
    _call("cudnnGetRNNTempSpaceSizes", handle.ptr, rnn.ptr, fwd_mode, x_desc.ptr, byref(work),
          byref(reserve))
    return work.value, reserve.value


def weight_params(handle: Handle, rnn: RNNDescriptor, lin_layer_id: int, ws_size: int,
                  ws_ptr: int, m_desc: TensorDescriptor, b_desc: TensorDescriptor,
                  pseudo_layer: int = 0) -> tuple[int, int]:
    """(matrix address, bias address) of one linear layer; 0 for a block that does not exist.

    cuDNN only does pointer arithmetic here; the shapes land in `m_desc` / `b_desc`.
    """
    m_addr, b_addr = c_void_p(), c_void_p()
    _call("cudnnGetRNNWeightParams", handle.ptr, rnn.ptr, pseudo_layer, ws_size,
          c_void_p(ws_ptr), lin_layer_id, m_desc.ptr, byref(m_addr), b_desc.ptr, byref(b_addr))
    return m_addr.value or 0, b_addr.value or 0


def rnn_forward(handle, rnn, fwd_mode, dev_lengths, x_desc, x, y_desc, y, h_desc, hx, hy,
                c_desc, cx, cy, ws_size, ws, work_size, work, reserve_size, reserve) -> None:
    _call("cudnnRNNForward", handle.ptr, rnn.ptr, fwd_mode, dev_lengths, x_desc.ptr, x,
          y_desc.ptr, y, h_desc.ptr, hx, hy, c_desc.ptr, cx, cy, ws_size, ws, work_size, work,
          reserve_size, reserve)


def rnn_backward_data(handle, rnn, dev_lengths, y_desc, y, dy, x_desc, dx, h_desc, hx, dhy,
                      dhx, c_desc, cx, dcy, dcx, ws_size, ws, work_size, work, reserve_size,
                      reserve) -> None:
    _call("cudnnRNNBackwardData_v8", handle.ptr, rnn.ptr, dev_lengths, y_desc.ptr, y, dy,
          x_desc.ptr, dx, h_desc.ptr, hx, dhy, dhx, c_desc.ptr, cx, dcy, dcx, ws_size, ws,
          work_size, work, reserve_size, reserve)


def rnn_backward_weights(handle, rnn, dev_lengths, x_desc, x, h_desc, hx, y_desc, y, ws_size,
                         dws, work_size, work, reserve_size, reserve,
                         mode: int = B.WGRAD_MODE_ADD) -> None:
    """Accumulates into `dws` (WGRAD_MODE_ADD): zero it first."""
    _call("cudnnRNNBackwardWeights_v8", handle.ptr, rnn.ptr, mode, dev_lengths, x_desc.ptr, x,
          h_desc.ptr, hx, y_desc.ptr, y, ws_size, dws, work_size, work, reserve_size, reserve)
