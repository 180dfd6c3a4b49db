"""The cuDNN path: Keras's LSTM through cuDNN 9's v8 RNN API (`lstm_gpu.cuda.cudnn`).

Contract: `lstm_gpu.paths.base`. The call, for x (T, B, F) time-major in processing order:

1. mask -> per-sample runs (`masking.mask_runs`). Rows must each be one contiguous run of
   valid steps (right-padded, or left-padded as a right-padded user mask becomes under
   go_backwards); anything else raises `PathUnavailable`. Runs not starting at step 0 are
   shifted to the front (a gather); fully masked samples run one dummy step on zeros.
2. cuDNN runs the front-aligned batch: SEQ_MAJOR_UNPACKED, PADDED_IO_ENABLED, per-sample
   lengths, one unidirectional layer, DOUBLE_BIAS with the input bias zero and Keras's bias as
   the recurrent bias, algo STANDARD, projSize = hidden. fp32 uses FMA math (no TF32) unless
   ``LSTM_GPU_ALLOW_TF32=1``; fp64 default math; fp16 tensor-op math with fp32 math precision.
3. Outputs are put back in processing order with Keras's masked-step values
   (`masking.restore_outputs`), fully masked samples keep h0/c0 (`masking.select_states`).

Weights: packed into cuDNN's weight space at the offsets `cudnnGetRNNWeightParams` reports
(checked once per shape against the canonical layout, which then allows 4 bulk copies).
Repacking is skipped when the same weight arrays come back with the same *version*:
``weights.version`` (an int attribute the layer sets on its `Weights` and bumps whenever a
weight changes, in place or not). Without ``version`` the weights are repacked every call
(always correct; costs a few device copies). A repack always writes a fresh buffer, so a
pending backward keeps the weights its forward used.

Caches live per (device, thread) next to that thread's cuDNN handle: RNN descriptors per
(dtype, F, U, math), data descriptors per (dtype, T, B, F, U, lengths) (LRU), packed weights
(LRU). The stream is CuPy's current stream, set on the handle at every call.

backward: `cudnnRNNBackwardData_v8` then `cudnnRNNBackwardWeights_v8` (into a zeroed buffer,
WGRAD_MODE_ADD) with the forward's reserve space; one backward per training forward.
Gradients come back in Keras layout; Keras's bias gradient is the recurrent-bias gradient.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .._xp import array_module, is_cupy_array
from ..activations import KERNEL_IDS
from ..errors import CudnnNotAvailable, PathUnavailable
from . import masking
from .base import CellSpec, DropoutMasks, ForwardResult, Gradients, Weights

NAME = "cudnn"

ENV_ALLOW_TF32 = "LSTM_GPU_ALLOW_TF32"
SUPPORTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
DATA_CACHE_SIZE = 32
WEIGHT_CACHE_SIZE = 8


# --- weight layout (pure; NumPy or CuPy) ----------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One linear layer in the weight space, offsets in elements from its start."""

    m_offset: int
    m_shape: tuple  # (rows, cols): gate = W @ input
    b_offset: int
    b_size: int


def canonical_layout(features: int, units: int) -> dict[int, Block]:
    """The layout cuDNN uses for 1 unidirectional LSTM layer with DOUBLE_BIAS.

    Matrices W0..W3 (U x F, on x) then R4..R7 (U x U, on h), then biases bW0..3, bR4..7.
    The path checks the reported offsets against this before using the bulk copies.
    """
    f, u = features, units
    blocks = {}
    bias0 = 4 * u * f + 4 * u * u
    for k in range(4):
        blocks[k] = Block(k * u * f, (u, f), bias0 + k * u, u)
        blocks[4 + k] = Block(4 * u * f + k * u * u, (u, u), bias0 + (4 + k) * u, u)
    return blocks


def weight_space_elements(features: int, units: int) -> int:
    return 4 * units * (features + units) + 8 * units


def pack_weights(kernel: Any, recurrent_kernel: Any, bias: Any, layout: dict[int, Block],
                 out: Any, canonical: bool = False) -> Any:
    """Write Keras weights into the flat weight space `out` (already zeroed or fresh).

    kernel (F, 4U), recurrent_kernel (U, 4U), bias (4U,) with gate blocks i, f, c, o =
    linLayerIDs 0..3 (input) and 4..7 (recurrent). The input bias stays zero.
    """
    f, u4 = kernel.shape
    u = u4 // 4
    if canonical:
        out[:4 * u * f].reshape(4 * u, f)[...] = kernel.T
        start = 4 * u * f
        out[start:start + 4 * u * u].reshape(4 * u, u)[...] = recurrent_kernel.T
        bias0 = start + 4 * u * u
        out[bias0:bias0 + 4 * u] = 0
        out[bias0 + 4 * u:bias0 + 8 * u] = bias
        return out
    for k in range(4):
        cols = slice(k * u, (k + 1) * u)
        for lin, src, b in ((k, kernel, None), (4 + k, recurrent_kernel, bias)):
            blk = layout[lin]
            rows, ncols = blk.m_shape
            size = rows * ncols
            out[blk.m_offset:blk.m_offset + size].reshape(rows, ncols)[...] = src[:, cols].T
            out[blk.b_offset:blk.b_offset + blk.b_size] = 0 if b is None else b[cols]
    return out


def unpack_weight_grads(dflat: Any, layout: dict[int, Block], features: int, units: int,
                        canonical: bool = False) -> tuple[Any, Any, Any]:
    """(dkernel (F, 4U), drecurrent_kernel (U, 4U), dbias (4U,)) from a flat gradient.

    cuDNN adds the input and recurrent biases, so their gradients are equal; Keras's single
    bias gets the recurrent one (not the sum).
    """
    xp = array_module(dflat)
    f, u = features, units
    if canonical:
        dk = xp.ascontiguousarray(dflat[:4 * u * f].reshape(4 * u, f).T)
        start = 4 * u * f
        drk = xp.ascontiguousarray(dflat[start:start + 4 * u * u].reshape(4 * u, u).T)
        bias0 = start + 4 * u * u
        return dk, drk, dflat[bias0 + 4 * u:bias0 + 8 * u].copy()
    dk = xp.empty((f, 4 * u), dflat.dtype)
    drk = xp.empty((u, 4 * u), dflat.dtype)
    db = xp.empty((4 * u,), dflat.dtype)
    for k in range(4):
        cols = slice(k * u, (k + 1) * u)
        for lin, dst in ((k, dk), (4 + k, drk)):
            blk = layout[lin]
            rows, ncols = blk.m_shape
            dst[:, cols] = dflat[blk.m_offset:blk.m_offset + rows * ncols].reshape(rows, ncols).T
        blk = layout[4 + k]
        db[cols] = dflat[blk.b_offset:blk.b_offset + blk.b_size]
    return dk, drk, db


# --- eligibility the path checks itself -----------------------------------------------------


def _check_supported(weights: Weights, x: Any, spec: CellSpec,
                     dropout: Optional[DropoutMasks]) -> None:
    problems = []
    if not is_cupy_array(x):
        problems.append("input is not a CuPy array")
    elif x.ndim != 3:
        problems.append(f"x must be (T, B, F), got shape {x.shape}")
    elif 0 in x.shape:
        problems.append(f"empty input of shape {x.shape}")
    if np.dtype(x.dtype) not in SUPPORTED_DTYPES:
        problems.append("dtype not supported by cuDNN")
    if spec.activation.kernel_id != KERNEL_IDS["tanh"]:
        problems.append("activation is not tanh")
    if spec.recurrent_activation.kernel_id != KERNEL_IDS["sigmoid"]:
        problems.append("recurrent_activation is not sigmoid")
    if not spec.use_bias or weights.bias is None:
        problems.append("use_bias=False")
    if dropout is not None and (dropout.inputs is not None or dropout.recurrent is not None):
        problems.append("dropout in training")
    if problems:
        raise PathUnavailable("; ".join(problems))


# --- the glue: masks around a front-aligned runner ------------------------------------------


@dataclass
class _Saved:
    core: Any
    token: Any
    runs: masking.MaskRuns
    zero_output_for_mask: bool
    seq_shape: tuple
    dtype: Any
    x_shape: tuple
    h0: Any
    c0: Any


def _run_forward(core, weights: Weights, x, mask, h0, c0, spec: CellSpec,
                 training: bool) -> ForwardResult:
    """Everything but the cuDNN calls, which `core` does (a NumPy stand-in in the tests)."""
    xp = array_module(x)
    steps, batch, _ = x.shape
    runs = masking.full_runs(steps, batch) if mask is None else masking.mask_runs(mask)
    if runs is None:
        raise PathUnavailable("mask rows are not each one contiguous run of valid steps")
    seq_shape = (steps, batch, spec.units)
    if runs.all_empty:
        seq = xp.zeros(seq_shape, x.dtype)
        saved = _Saved(None, None, runs, spec.zero_output_for_mask, seq_shape, x.dtype,
                       x.shape, h0, c0) if training else None
        return ForwardResult(seq[-1], seq, h0, c0, saved)
    x_front = x if runs.front_aligned else masking.shift_to_front(x, runs)
    if runs.any_empty:  # the dummy step of a fully masked sample runs on zeros
        x_front = xp.where(xp.asarray(runs.empty)[None, :, None], xp.zeros((), x.dtype),
                           x_front)
    y, hy, cy, token = core.forward(weights, x_front, runs.kernel_lengths(), h0, c0, training)
    seq = masking.restore_outputs(y, hy, runs, spec.zero_output_for_mask)
    h = masking.select_states(hy, h0, runs)
    c = masking.select_states(cy, c0, runs)
    saved = None
    if training:
        saved = _Saved(core, token, runs, spec.zero_output_for_mask, seq_shape, x.dtype,
                       x.shape, h0, c0)
    return ForwardResult(seq[-1], seq, h, c, saved)


def _run_backward(saved: _Saved, d_last, d_sequence, d_h, d_c) -> Gradients:
    runs = saved.runs
    xp = array_module(saved.h0)
    like = xp.empty(saved.seq_shape, saved.dtype)
    zeros_bu = xp.zeros(saved.seq_shape[1:], saved.dtype)
    d_h = zeros_bu if d_h is None else d_h
    d_c = zeros_bu if d_c is None else d_c
    if saved.core is None:  # every sample fully masked: outputs are constants
        f, u = saved.x_shape[2], saved.seq_shape[2]
        return Gradients(xp.zeros(saved.x_shape, saved.dtype), d_h.copy(), d_c.copy(),
                         xp.zeros((f, 4 * u), saved.dtype), xp.zeros((u, 4 * u), saved.dtype),
                         xp.zeros((4 * u,), saved.dtype))
    dy, dh_last = masking.route_output_grads(d_sequence, d_last, runs,
                                             saved.zero_output_for_mask, like)
    dhy, dh0_direct = masking.split_state_grad(d_h + dh_last, runs)
    dcy, dc0_direct = masking.split_state_grad(d_c, runs)
    dx_front, dhx, dcx, dk, drk, db = saved.core.backward(saved.token, dy, dhy, dcy)
    dx = masking.shift_back(dx_front, runs)  # also zeroes whatever cuDNN left at padding
    dh0 = masking.select_states(dhx, dh0_direct, runs)
    dc0 = masking.select_states(dcx, dc0_direct, runs)
    return Gradients(dx, dh0, dc0, dk, drk, db)


# --- the cuDNN runner -----------------------------------------------------------------------


def _math(dtype) -> tuple[int, int]:
    """(mathPrec, mathType) for a data dtype."""
    from ..cuda.cudnn import _bindings as B

    dt = np.dtype(dtype)
    if dt == np.float16:
        return B.DATA_FLOAT, B.TENSOR_OP_MATH
    if dt == np.float64:
        return B.DATA_DOUBLE, B.DEFAULT_MATH
    tf32 = os.environ.get(ENV_ALLOW_TF32, "") not in ("", "0")
    return B.DATA_FLOAT, (B.DEFAULT_MATH if tf32 else B.FMA_MATH)


def _ptr(a) -> Optional[int]:
    return a.data.ptr if a is not None and a.size else None


class _RnnPlan:
    """RNN descriptor, weight-space size and layout for one (dtype, F, U, math)."""

    def __init__(self, ctx: "_Context", dtype, features: int, units: int, math):
        from ..cuda.cudnn import api

        cp = ctx.cp
        self.dtype, self.features, self.units = np.dtype(dtype), features, units
        self.rnn = api.RNNDescriptor().set(
            input_size=features, hidden_size=units, data_type=api.data_type(dtype),
            math_prec=math[0], math_type=math[1], dropout=ctx.dropout)
        self.ws_bytes = api.weight_space_size(ctx.handle, self.rnn)
        self.ws_elems = self.ws_bytes // self.dtype.itemsize
        probe = cp.empty(max(self.ws_elems, 1), self.dtype)
        self.layout = self._query_layout(ctx, probe)
        self.canonical = (self.layout == canonical_layout(features, units)
                          and self.ws_elems == weight_space_elements(features, units))

    def _query_layout(self, ctx, probe) -> dict[int, Block]:
        from ..cuda.cudnn import api

        item = self.dtype.itemsize
        base = probe.data.ptr
        layout = {}
        with api.TensorDescriptor() as mdesc, api.TensorDescriptor() as bdesc:
            for lin in range(8):
                m_addr, b_addr = api.weight_params(ctx.handle, self.rnn, lin, self.ws_bytes,
                                                   base, mdesc, bdesc)
                _, mdims, _ = mdesc.get()
                _, bdims, _ = bdesc.get()
                rows, cols = (mdims[-2], mdims[-1]) if len(mdims) >= 2 else (0, 0)
                layout[lin] = Block((m_addr - base) // item, (rows, cols),
                                    (b_addr - base) // item, int(np.prod(bdims)))
        return layout


class _DataPlan:
    """x/y data descriptors, h/c tensor descriptors and device lengths for one shape."""

    def __init__(self, ctx: "_Context", plan: _RnnPlan, steps: int, batch: int,
                 lengths: np.ndarray):
        from ..cuda.cudnn import _bindings as B
        from ..cuda.cudnn import api

        dt = plan.dtype
        common = dict(dtype=dt, layout=B.SEQ_MAJOR_UNPACKED, max_seq_length=steps,
                      batch_size=batch, lengths=lengths)
        self.x_desc = api.RNNDataDescriptor().set(vector_size=plan.features, **common)
        self.y_desc = api.RNNDataDescriptor().set(vector_size=plan.units, **common)
        self.h_desc = api.TensorDescriptor().set(dt, (1, batch, plan.units))
        self.c_desc = api.TensorDescriptor().set(dt, (1, batch, plan.units))
        self.dev_lengths = ctx.cp.asarray(lengths, dtype=np.int32)
        self._sizes: dict[int, tuple[int, int]] = {}

    def sizes(self, ctx: "_Context", plan: _RnnPlan, mode: int) -> tuple[int, int]:
        from ..cuda.cudnn import api

        if mode not in self._sizes:
            self._sizes[mode] = api.temp_space_sizes(ctx.handle, plan.rnn, mode, self.x_desc)
        return self._sizes[mode]


class _Context:
    """One thread's cuDNN state on one device."""

    def __init__(self, device_id: int):
        from .._xp import cupy_module
        from ..cuda.cudnn import api

        self.cp = cupy_module()
        self.device_id = device_id
        self.handle = api.get_handle(device_id)
        self.dropout = api.DropoutDescriptor().set_disabled(self.handle)
        self.plans: dict[tuple, _RnnPlan] = {}
        self.data: OrderedDict = OrderedDict()
        self.weights: OrderedDict = OrderedDict()

    def bind_stream(self) -> None:
        self.handle.set_stream(self.cp.cuda.get_current_stream().ptr)

    def plan(self, dtype, features: int, units: int) -> _RnnPlan:
        math = _math(dtype)
        key = (np.dtype(dtype).str, features, units, math)
        if key not in self.plans:
            self.plans[key] = _RnnPlan(self, dtype, features, units, math)
        return self.plans[key]

    def data_plan(self, plan: _RnnPlan, steps: int, batch: int,
                  lengths: np.ndarray) -> _DataPlan:
        key = (id(plan), steps, batch, lengths.tobytes())
        dp = self.data.pop(key, None) or _DataPlan(self, plan, steps, batch, lengths)
        self.data[key] = dp
        while len(self.data) > DATA_CACHE_SIZE:
            self.data.popitem(last=False)
        return dp

    def weight_space(self, plan: _RnnPlan, weights: Weights):
        """The packed weight space, reused while the same arrays keep the same version."""
        version = getattr(weights, "version", None)
        arrays = (weights.kernel, weights.recurrent_kernel, weights.bias)
        key = (id(plan),) + tuple(id(a) for a in arrays)
        entry = self.weights.pop(key, None)
        if (entry is not None and version is not None and entry[1] == version
                and all(a is b for a, b in zip(entry[0], arrays))):
            self.weights[key] = entry
            return entry[2]
        cp, dt = self.cp, plan.dtype
        ws = cp.zeros(max(plan.ws_elems, 1), dt)
        k, rk, b = (cp.asarray(a, dtype=dt) for a in arrays)
        pack_weights(k, rk, b, plan.layout, ws, canonical=plan.canonical)
        if version is not None:
            self.weights[key] = (arrays, version, ws)
            while len(self.weights) > WEIGHT_CACHE_SIZE:
                self.weights.popitem(last=False)
        return ws


_local = threading.local()


def _context(device_id: int) -> _Context:
    contexts = getattr(_local, "contexts", None)
    if contexts is None:
        contexts = _local.contexts = {}
    ctx = contexts.get(device_id)
    if ctx is None:
        ctx = contexts[device_id] = _Context(device_id)
    return ctx


@dataclass
class _Token:
    """What one training forward leaves for its backward (reserve space included)."""

    device_id: int
    plan: _RnnPlan
    data: _DataPlan
    ws: Any
    x: Any
    hx: Any
    cx: Any
    y: Any
    reserve: Any
    reserve_bytes: int
    used: bool = False


class CudnnCore:
    """Runs front-aligned batches with per-sample lengths through cuDNN."""

    def forward(self, weights: Weights, x, lengths: np.ndarray, h0, c0, training: bool):
        from ..cuda.cudnn import _bindings as B
        from ..cuda.cudnn import api

        cp = array_module(x)
        steps, batch, features = x.shape
        dt = x.dtype
        with x.device:
            ctx = _context(x.device.id)
            ctx.bind_stream()
            plan = ctx.plan(dt, features, h0.shape[1])
            ws = ctx.weight_space(plan, weights)
            data = ctx.data_plan(plan, steps, batch, lengths)
            x_c = cp.ascontiguousarray(x)
            hx = cp.ascontiguousarray(h0, dtype=dt)
            cx = cp.ascontiguousarray(c0, dtype=dt)
            y = cp.empty((steps, batch, plan.units), dt)
            hy, cy = cp.empty_like(hx), cp.empty_like(cx)
            mode = B.FWD_MODE_TRAINING if training else B.FWD_MODE_INFERENCE
            work_bytes, reserve_bytes = data.sizes(ctx, plan, mode)
            work = cp.empty(work_bytes, np.uint8)
            reserve = cp.empty(reserve_bytes, np.uint8) if training else None
            api.rnn_forward(ctx.handle, plan.rnn, mode, _ptr(data.dev_lengths), data.x_desc,
                            _ptr(x_c), data.y_desc, _ptr(y), data.h_desc, _ptr(hx), _ptr(hy),
                            data.c_desc, _ptr(cx), _ptr(cy), plan.ws_bytes, _ptr(ws),
                            work_bytes, _ptr(work), reserve_bytes if training else 0,
                            _ptr(reserve))
        token = None
        if training:
            token = _Token(x.device.id, plan, data, ws, x_c, hx, cx, y, reserve,
                           reserve_bytes)
        return y, hy, cy, token

    def backward(self, token: _Token, dy, dhy, dcy):
        from ..cuda.cudnn import _bindings as B
        from ..cuda.cudnn import api

        if token.used:
            raise RuntimeError("cuDNN backward can run once per training forward; "
                               "call the layer again with training=True")
        token.used = True
        cp = array_module(token.x)
        plan, data, dt = token.plan, token.data, token.x.dtype
        with cp.cuda.Device(token.device_id):
            ctx = _context(token.device_id)
            ctx.bind_stream()
            dy_c = cp.ascontiguousarray(dy, dtype=dt)
            dhy_c = cp.ascontiguousarray(dhy, dtype=dt)
            dcy_c = cp.ascontiguousarray(dcy, dtype=dt)
            dx = cp.empty_like(token.x)
            dhx, dcx = cp.empty_like(token.hx), cp.empty_like(token.cx)
            work_bytes, _ = data.sizes(ctx, plan, B.FWD_MODE_TRAINING)
            work = cp.empty(work_bytes, np.uint8)
            api.rnn_backward_data(ctx.handle, plan.rnn, _ptr(data.dev_lengths), data.y_desc,
                                  _ptr(token.y), _ptr(dy_c), data.x_desc, _ptr(dx),
                                  data.h_desc, _ptr(token.hx), _ptr(dhy_c), _ptr(dhx),
                                  data.c_desc, _ptr(token.cx), _ptr(dcy_c), _ptr(dcx),
                                  plan.ws_bytes, _ptr(token.ws), work_bytes, _ptr(work),
                                  token.reserve_bytes, _ptr(token.reserve))
            dws = cp.zeros(max(plan.ws_elems, 1), dt)
            api.rnn_backward_weights(ctx.handle, plan.rnn, _ptr(data.dev_lengths),
                                     data.x_desc, _ptr(token.x), data.h_desc, _ptr(token.hx),
                                     data.y_desc, _ptr(token.y), plan.ws_bytes, _ptr(dws),
                                     work_bytes, _ptr(work), token.reserve_bytes,
                                     _ptr(token.reserve), mode=B.WGRAD_MODE_ADD)
            dk, drk, db = unpack_weight_grads(dws, plan.layout, plan.features, plan.units,
                                              canonical=plan.canonical)
        token.reserve = None  # free it early; the token is spent
        return dx, dhx, dcx, dk, drk, db


_CORE = CudnnCore()


# --- the contract ---------------------------------------------------------------------------


def forward(weights: Weights, x: Any, mask: Any, h0: Any, c0: Any, spec: CellSpec,
            dropout: Optional[DropoutMasks], training: bool) -> ForwardResult:
    """`base.Path.forward` on cuDNN. Raises PathUnavailable (fall back) or CudnnError."""
    _check_supported(weights, x, spec, dropout)
    from ..cuda import cudnn

    why = cudnn.unavailable_reason()
    if why is not None:
        raise PathUnavailable(f"cuDNN not available: {why}")
    try:
        return _run_forward(_CORE, weights, x, mask, h0, c0, spec, training)
    except CudnnNotAvailable as e:  # e.g. CuPy vanished between the checks
        raise PathUnavailable(f"cuDNN not available: {e}") from e


def backward(saved: _Saved, d_last: Any, d_sequence: Any, d_h: Any, d_c: Any) -> Gradients:
    """`base.Path.backward` for a training `forward` of this path."""
    if saved is None:
        raise ValueError("backward needs the `saved` of a forward run with training=True")
    return _run_backward(saved, d_last, d_sequence, d_h, d_c)
