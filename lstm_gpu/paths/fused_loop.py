"""The kernel path's algorithm, written once for any device: CUDA, or the host stand-ins.

`paths/cuda_kernels.py` runs it with the CUDA kernels of kernels/lstm_kernels.cu and our cuBLAS
binding; the tests run it on NumPy arrays with the same per-element code compiled for the host
and SciPy's BLAS on the same GEMM plans, which checks every index, layout and GEMM argument
without a GPU.

Notation: T steps, B samples, F features, U units, G = 4 gates (i, f, c, o).

Forward
    XZ = x @ W for all steps at once           (T, B, 4U)   [impl 1 + input dropout:
                                                              (x * mx_k) @ W_k -> (4, T, B, U)]
    per step t:  RZ = h_{t-1} @ Uw             (B, 4U)      [recurrent dropout:
                                                              (h * mr_k) @ Uw_k -> (4, B, U)]
                 fused step: bias, gates, cell, mask carry, outputs, h * mr_k for the next
                 GEMM, pre-activations Z[t] saved for backward (training only)
Backward (reverse processing order)
    per step t:  fused step: dZ[t], carried dh, dc and output gradient
                 DH = dZ[t] @ Uw^T (per gate with recurrent dropout), read by step t-1
    then: dW = X^T dZ, dUw = Hprev^T dZ, dx = dZ W^T (per gate with dropout masks),
          dbias = deterministic column sum of dZ (two-pass kernel, no atomics).

Operands passed to the pointwise ops are "gate-strided": element (b, k, u) of a per-step
operand sits at b * batch_stride + k * gate_stride + u from the view's first element.

Plans (`loop_engine`): the time loops read and write only a plan's buffers, listed here per
shape key (elements; dt = the compute dtype, u8 = uint8; * = only when present):

    forward    xz 4TBU, seq TBU, h0 BU, c0 BU, uw 4UU, rz 4BU, bias 4U*, mask TB u8*,
               mr 4BU*, h_rec 4BU*;  inference: h BU, c BU;  training: hs TBU, cs TBU,
               z 4TBU
    backward   dZ 4TBU, dh_rec BU (4BU with recurrent dropout), g_out BU, dh BU, dc BU,
               d_seq TBU* (allocated by the first backward of the plan)

plus, on CUDA, one cuBLAS workspace (4 MiB, 32 MiB from sm_90). A training plan is thus about
16 TBU elements. Each step's operations are built once per plan into a program (views, GEMM
plans, packed kernel arguments): an eager call only issues them, a graph call replays them.
What a call returns is always a fresh array (copied out of the plan); a training call's
record for backward (Z, hs, cs) stays in the plan until a later call needs the buffers while
the record is alive, which copies it out first (`_evict`, on that call's stream); its backward
copies it all back into a plan (`_make_resident`, maybe on another stream) and drops the
copies once the device says they may go (`Device.before_free`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import numpy as np

from ..errors import PathUnavailable
from .base import CellSpec, DropoutMasks, ForwardResult, Gradients, Weights
from .loop_engine import LoopDevice, LoopEngine, Plan


class Device(LoopDevice, Protocol):
    """A `LoopDevice` with the loop's operations. `fwd_step`, `bwd_step` and `gemm` return
    zero-argument ops (see kernels/lstm_kernels.cu for the step arguments); `gemm` computes
    ``out = a @ b`` (2-D or batched) through `lstm_gpu.cuda.gemm_plan`.

    For records copied out of their plan: `stream()` names where work and new arrays go now
    (None on the host); `before_free(allocated_on)` runs before arrays made on that stream,
    just used on the current one, are dropped, and waits for that use where their memory
    could otherwise be handed out again before the use ends."""

    xp: Any

    def fwd_step(self, plan: Plan, **args) -> Callable[[], None]: ...
    def bwd_step(self, plan: Plan, **args) -> Callable[[], None]: ...
    def gemm(self, plan: Plan, a, b, out) -> Callable[[], None]: ...
    def colsum(self, src, *, ts, bs, gs, T, B, U, out) -> None: ...
    def stream(self) -> Any: ...
    def before_free(self, allocated_on: Any) -> None: ...


@dataclass
class Saved:
    """What backward needs (kept only when training). z, hs, cs and mask are the plan's
    buffers while this record is the plan's resident, private copies after `_evict`, made on
    the stream `copied_on` (`Device.stream()`; None while resident). x, h0, c0 and the
    weights and masks cast to the compute dtype were made on the forward's stream, `made_on`."""

    spec: CellSpec
    weights: Weights  # in the compute dtype
    x: Any
    mask: Any  # (T, B) uint8 or None
    h0: Any
    c0: Any
    dropout: Optional[DropoutMasks]  # in the compute dtype
    z: Any  # (T, B, 4U) pre-activations (bias included)
    hs: Any  # (T, B, U) h state after each step
    cs: Any  # (T, B, U) c state after each step
    plan: Plan
    engine: LoopEngine
    copied_on: Any = None
    made_on: Any = None


@dataclass(frozen=True)
class _Dims:
    T: int
    B: int
    U: int
    dtype: np.dtype
    in_groups: int  # input dropout masks: 0 (none), 1 (one for all gates) or 4 (per gate)
    rec: bool  # recurrent dropout (per-gate GEMMs)
    has_mask: bool
    has_bias: bool
    act: int
    ract: int
    zero_output: int


def kernel_ids(spec: CellSpec) -> tuple[int, int]:
    """(activation, recurrent activation) kernel ids; PathUnavailable for a Python callable."""
    act, ract = spec.activation.kernel_id, spec.recurrent_activation.kernel_id
    if act < 0 or ract < 0:
        raise PathUnavailable(
            "the CUDA kernel path has no kernel form for a Python callable activation; "
            "the layer runs the xp-generic reference instead"
        )
    return act, ract


def _check_dropout(dropout: Optional[DropoutMasks]) -> None:
    if dropout is None:
        return
    mx, mr = dropout.inputs, dropout.recurrent
    if mx is not None and (mx.ndim != 3 or mx.shape[0] not in (1, 4)):
        raise ValueError(f"input dropout masks must be (1|4, B, F), got {mx.shape}")
    if mr is not None and (mr.ndim != 3 or mr.shape[0] != 4):
        raise ValueError(f"recurrent dropout masks must be (4, B, U), got {mr.shape}")


def _in_dtype(xp, dt, weights: Weights, dropout: Optional[DropoutMasks]):
    """Weights and dropout masks in the compute dtype (no copy when they already are): the
    kernels and the GEMMs read them through `T*` of x's type."""
    cast = (lambda a: None if a is None else xp.asarray(a, dtype=dt))
    weights = Weights(cast(weights.kernel), cast(weights.recurrent_kernel), cast(weights.bias))
    if dropout is not None:
        dropout = DropoutMasks(inputs=cast(dropout.inputs), recurrent=cast(dropout.recurrent))
    return weights, dropout


def per_gate(xp, w, U):
    """(R, 4U) -> contiguous (4, R, U): the four gate blocks of a Keras weight."""
    return xp.ascontiguousarray(w.reshape(w.shape[0], 4, U).transpose(1, 0, 2))


def from_per_gate(g):
    """(4, R, U) -> (R, 4U)."""
    return g.transpose(1, 0, 2).reshape(g.shape[1], 4 * g.shape[2])


# --- plans: buffers and programs ---------------------------------------------------------------


def _key(device, dims: _Dims, training: bool) -> tuple:
    return ("train" if training else "infer", getattr(device, "device_id", None), dims)


def _forward_buffers(xp, d: _Dims, training: bool) -> dict:
    T, B, U, dt = d.T, d.B, d.U, d.dtype
    buf = dict(seq=xp.empty((T, B, U), dt), h0=xp.empty((B, U), dt), c0=xp.empty((B, U), dt),
               xz=xp.empty((4, T, B, U) if d.in_groups == 4 else (T, B, 4 * U), dt),
               uw=xp.empty((4, U, U) if d.rec else (U, 4 * U), dt),
               rz=xp.empty((4, B, U) if d.rec else (B, 4 * U), dt),
               bias=xp.empty((4 * U,), dt) if d.has_bias else None,
               mask=xp.empty((T, B), xp.uint8) if d.has_mask else None,
               mr=xp.empty((4, B, U), dt) if d.rec else None,
               h_rec=xp.empty((4, B, U), dt) if d.rec else None)
    if training:
        buf.update(hs=xp.empty((T, B, U), dt), cs=xp.empty((T, B, U), dt),
                   z=xp.empty((T, B, 4 * U), dt))
    else:
        buf.update(h=xp.empty((B, U), dt), c=xp.empty((B, U), dt))
    return buf


def _forward_program(device: Device, plan: Plan, d: _Dims) -> list:
    """Per step: the recurrent GEMM, then the fused step (views and arguments built once)."""
    b = plan.buf
    training = plan.training
    xz, seq, mask, mr, h_rec = b["xz"], b["seq"], b["mask"], b["mr"], b["h_rec"]
    if d.in_groups == 4:
        xz_steps, xz_gs, xz_bs = xz.transpose(1, 0, 2, 3), d.T * d.B * d.U, d.U
    else:
        xz_steps, xz_gs, xz_bs = xz, d.U, 4 * d.U
    rz_gs, rz_bs = (d.B * d.U, d.U) if d.rec else (d.U, 4 * d.U)
    common = dict(xz_gs=xz_gs, xz_bs=xz_bs, rz=b["rz"], rz_gs=rz_gs, rz_bs=rz_bs,
                  bias=b["bias"], rec_mask=mr, h_rec=h_rec, B=d.B, U=d.U, act=d.act,
                  ract=d.ract, zero_output=d.zero_output)
    program = []
    h_prev, c_prev = b["h0"], b["c0"]
    for t in range(d.T):
        if training:
            h, c, z = b["hs"][t], b["cs"][t], b["z"][t]
        else:
            h, c, z = b["h"], b["c"], None
        program.append(device.gemm(plan, h_rec if d.rec else h_prev, b["uw"], b["rz"]))
        program.append(device.fwd_step(
            plan, xz=xz_steps[t], h_prev=h_prev, c_prev=c_prev,
            out_prev=None if t == 0 else seq[t - 1], mask=None if mask is None else mask[t],
            h=h, c=c, out=seq[t], z_save=z, **common))
        h_prev, c_prev = h, c
    return program


def _backward_shapes(d: _Dims, with_seq: bool) -> dict:
    T, B, U = d.T, d.B, d.U
    shapes = dict(dZ=(T, 4, B, U) if d.rec else (T, B, 4 * U),
                  dh_rec=(4, B, U) if d.rec else (B, U), g_out=(B, U), dh=(B, U), dc=(B, U))
    if with_seq:
        shapes["d_seq"] = (T, B, U)
    return shapes


def _backward_program(device: Device, plan: Plan, d: _Dims, with_seq: bool) -> list:
    """Per step (reverse): the fused step, then DH = dZ[t] @ Uw^T for step t - 1."""
    b = plan.buf
    dZ, dh_rec, mask, cs = b["dZ"], b["dh_rec"], b["mask"], b["cs"]
    uw_t = b["uw"].transpose(0, 2, 1) if d.rec else b["uw"].T
    dz_gs, dz_bs = (d.B * d.U, d.U) if d.rec else (d.U, 4 * d.U)
    common = dict(g_out=b["g_out"], dh=b["dh"], rec_mask=b["mr"], dc=b["dc"], dz_gs=dz_gs,
                  dz_bs=dz_bs, B=d.B, U=d.U, act=d.act, ract=d.ract,
                  zero_output=d.zero_output)
    program = []
    for t in range(d.T - 1, -1, -1):
        program.append(device.bwd_step(
            plan, z=b["z"][t], c_prev=b["c0"] if t == 0 else cs[t - 1], c=cs[t],
            mask=None if mask is None else mask[t],
            d_out=b["d_seq"][t] if with_seq else None,
            dh_rec=None if t == d.T - 1 else dh_rec, dz=dZ[t], **common))
        program.append(device.gemm(plan, dZ[t], uw_t, dh_rec))
    return program


def _ensure_backward(device: Device, plan: Plan, d: _Dims, with_seq: bool) -> str:
    kind = "backward+seq" if with_seq else "backward"
    if kind not in plan.programs:
        for name, shape in _backward_shapes(d, with_seq).items():
            if name not in plan.buf:
                plan.buf[name] = device.xp.empty(shape, d.dtype)
        plan.programs[kind] = _backward_program(device, plan, d, with_seq)
    return kind


# --- copies into and out of a plan -------------------------------------------------------------


def _load_recurrent_weights(plan: Plan, w: Weights, d: _Dims) -> None:
    rk = w.recurrent_kernel
    if d.rec:
        plan.buf["uw"][...] = rk.reshape(d.U, 4, d.U).transpose(1, 0, 2)
    else:
        plan.buf["uw"][...] = rk


def _load_record_inputs(xp, plan: Plan, d: _Dims, mask, h0, c0, mr) -> None:
    """What both loops read besides the projection and the weights: h0, c0, mask, mr."""
    b = plan.buf
    b["h0"][...] = h0
    b["c0"][...] = c0
    if d.has_mask:
        b["mask"][...] = mask
    if d.rec:
        b["mr"][...] = mr
        xp.multiply(b["h0"][None], mr, out=b["h_rec"])


def _input_projection(xp, plan: Plan, x, W, mx, d: _Dims) -> None:
    """XZ into the plan: a normal library GEMM, before the loop (never captured)."""
    T, B, F = x.shape
    U = d.U
    if d.in_groups == 4:
        xk = (x[None] * mx[:, None]).reshape(4, T * B, F)
        xp.matmul(xk, per_gate(xp, W, U), out=plan.buf["xz"].reshape(4, T * B, U))
        return
    xin = x * mx[0] if d.in_groups == 1 else x
    xp.matmul(xin.reshape(T * B, F), W, out=plan.buf["xz"].reshape(T * B, 4 * U))


_RECORD_BUFFERS = ("z", "hs", "cs", "mask")


def _evict(device: Device, record: Saved, plan: Plan) -> None:
    """Copy a live record out of `plan` before another call overwrites its buffers."""
    for name in _RECORD_BUFFERS:
        arr = getattr(record, name)
        if arr is not None and arr is plan.buf[name]:
            setattr(record, name, arr.copy())
    record.copied_on = device.stream()


def _restore(device: Device, saved: Saved) -> Plan:
    """The plan to run `saved`'s backward in: its own while it is resident there, else a slot
    of its key (`_make_resident` copies it in once the plan is held)."""
    if saved.plan.resident() is saved:
        return saved.plan
    d = saved.plan.dims
    return saved.engine.plan(saved.plan.key, True, lambda p: _create(device, p, d), device)


def _make_resident(device: Device, saved: Saved, plan: Plan, d: _Dims) -> None:
    """Copy a record that lives elsewhere into `plan` and make it the resident. All of its
    private copies go back in, so that this is their only reader: they are dropped here,
    after `before_free` (read on another stream than the one they were made on, they must
    not return to that stream's memory before the reads end)."""
    if plan.resident() is saved:
        return
    xp = device.xp
    if saved.plan is not plan:
        # The record was copied out during a use of saved.plan, maybe on another stream.
        device.before_use(saved.plan)
    saved.engine.claim(plan, saved, functools.partial(_evict, device))
    b = plan.buf
    b["z"][...] = saved.z
    b["hs"][...] = saved.hs
    b["cs"][...] = saved.cs
    _load_record_inputs(xp, plan, d, saved.mask, saved.h0, saved.c0,
                        None if saved.dropout is None else saved.dropout.recurrent)
    _load_recurrent_weights(plan, saved.weights, d)
    device.before_free(saved.copied_on)
    saved.z, saved.hs, saved.cs, saved.mask = b["z"], b["hs"], b["cs"], b["mask"]
    saved.plan, saved.copied_on = plan, None
    saved.engine.count("record_restores")


def _create(device: Device, plan: Plan, d: _Dims) -> None:
    plan.dims = d
    plan.buf.update(_forward_buffers(device.xp, d, plan.training))
    plan.programs["forward"] = _forward_program(device, plan, d)


def _dims(x, spec: CellSpec, mask, dropout: Optional[DropoutMasks]) -> _Dims:
    act, ract = kernel_ids(spec)
    T, B, _ = x.shape
    mx = None if dropout is None else dropout.inputs
    return _Dims(T=T, B=B, U=spec.units, dtype=np.dtype(x.dtype),
                 in_groups=0 if mx is None else mx.shape[0],
                 rec=dropout is not None and dropout.recurrent is not None,
                 has_mask=mask is not None, has_bias=spec.use_bias, act=act, ract=ract,
                 zero_output=int(spec.zero_output_for_mask))


# --- forward and backward ----------------------------------------------------------------------


def forward(device: Device, engine: LoopEngine, weights: Weights, x, mask, h0, c0,
            spec: CellSpec, dropout: Optional[DropoutMasks], training: bool) -> ForwardResult:
    """The path contract's forward (`paths/base.py`) on `device`, in a plan of `engine`.

    Every returned array is fresh; with `training`, `saved` is the record for `backward`."""
    _check_dropout(dropout)
    d = _dims(x, spec, mask, dropout)  # PathUnavailable for callables, before any device work
    T, B = d.T, d.B
    xp = device.xp
    dt = x.dtype
    weights, dropout = _in_dtype(xp, dt, weights, dropout)
    h0, c0 = xp.asarray(h0, dtype=dt), xp.asarray(c0, dtype=dt)
    if T == 0 or B == 0:
        return _empty_forward(xp, weights, x, mask, h0, c0, spec, dropout, training, engine)
    mx = None if dropout is None else dropout.inputs
    mr = None if dropout is None else dropout.recurrent
    plan = engine.plan(_key(device, d, training), training, lambda p: _create(device, p, d),
                       device)
    with engine.using(device, plan):
        saved = None
        if training:
            saved = Saved(spec=spec, weights=weights, x=x, mask=plan.buf["mask"], h0=h0,
                          c0=c0, dropout=dropout, z=plan.buf["z"], hs=plan.buf["hs"],
                          cs=plan.buf["cs"], plan=plan, engine=engine, made_on=device.stream())
            engine.claim(plan, saved, functools.partial(_evict, device))
        b = plan.buf
        _input_projection(xp, plan, x, weights.kernel, mx, d)
        _load_record_inputs(xp, plan, d, mask, h0, c0, mr)
        _load_recurrent_weights(plan, weights, d)
        if d.has_bias:
            b["bias"][...] = weights.bias
        engine.run(device, plan, "forward")
        seq = b["seq"].copy()
        h_last, c_last = (b["hs"][T - 1], b["cs"][T - 1]) if training else (b["h"], b["c"])
        h_last, c_last = h_last.copy(), c_last.copy()
    return ForwardResult(last=seq[T - 1], sequence=seq, h=h_last, c=c_last, saved=saved)


def _empty_forward(xp, weights, x, mask, h0, c0, spec, dropout, training, engine):
    """T == 0 or B == 0: no loop; the state passes through."""
    T, B, _ = x.shape
    U, dt = spec.units, x.dtype
    seq = xp.zeros((T, B, U), dt)
    saved = None
    if training:
        saved = Saved(spec=spec, weights=weights, x=x,
                      mask=None if mask is None else xp.asarray(mask, dtype=xp.uint8), h0=h0,
                      c0=c0, dropout=dropout, z=xp.zeros((T, B, 4 * U), dt), hs=seq.copy(),
                      cs=seq.copy(), plan=None, engine=engine)
    return ForwardResult(last=xp.zeros((B, U), dt), sequence=seq, h=h0.copy(), c=c0.copy(),
                         saved=saved)


def _set_or_zero(buf, g) -> None:
    if g is None:
        buf.fill(0)
    else:
        buf[...] = g


def backward(device: Device, saved: Saved, d_last, d_sequence, d_h, d_c) -> Gradients:
    """The path contract's backward: gradients of the training call that made `saved`, in its
    plan (or, when a later call took that plan, in one it is copied back into)."""
    if saved is None:
        raise ValueError("backward needs the `saved` of a forward call with training=True")
    xp = device.xp
    dt = saved.x.dtype
    d = _dims(saved.x, saved.spec, saved.mask, saved.dropout)
    T, B, U = d.T, d.B, d.U
    if T == 0 or B == 0:
        dh0 = xp.zeros((B, U), dt) if d_h is None else xp.array(d_h, dtype=dt)
        dc0 = xp.zeros((B, U), dt) if d_c is None else xp.array(d_c, dtype=dt)
        dZ = xp.zeros((T, 4, B, U) if d.rec else (T, B, 4 * U), dt)
        return _weight_gradients(device, saved, dZ, dh0, dc0)
    engine = saved.engine
    with_seq = d_sequence is not None
    plan = _restore(device, saved)
    with engine.using(device, plan):
        _make_resident(device, saved, plan, d)
        kind = _ensure_backward(device, plan, d, with_seq)
        b = plan.buf
        _set_or_zero(b["g_out"], d_last)
        _set_or_zero(b["dh"], d_h)
        _set_or_zero(b["dc"], d_c)
        if with_seq:
            b["d_seq"][...] = d_sequence
        engine.run(device, plan, kind)
        mr = None if saved.dropout is None else saved.dropout.recurrent
        rec = (b["dh_rec"] * mr).sum(axis=0) if mr is not None else b["dh_rec"]
        grads = _weight_gradients(device, saved, b["dZ"], b["dh"] + rec, b["dc"].copy())
    # The record's own arrays are freed with the record, into the forward stream's memory:
    # from another stream, wait for this backward's reads of them first.
    device.before_free(saved.made_on)
    return grads


def _weight_gradients(device: Device, saved: Saved, dZ, dh0, dc0) -> Gradients:
    """dZ: (T, B, 4U), or (T, 4, B, U) with recurrent dropout (the plan's buffer)."""
    spec, w, x = saved.spec, saved.weights, saved.x
    xp = device.xp
    T, B, F = x.shape
    U = spec.units
    dt = x.dtype
    mx = None if saved.dropout is None else saved.dropout.inputs
    mr = None if saved.dropout is None else saved.dropout.recurrent
    rec = mr is not None
    # dZ per gate (4, TB, U) and fused (TB, 4U), each built only when needed.
    need_gates = rec or (mx is not None and mx.shape[0] == 4)
    if rec:
        dzg = xp.ascontiguousarray(dZ.transpose(1, 0, 2, 3)).reshape(4, T * B, U)
    elif need_gates:
        dzg = xp.ascontiguousarray(dZ.reshape(T * B, 4, U).transpose(1, 0, 2))
    dz2 = from_per_gate(dzg) if rec else dZ.reshape(T * B, 4 * U)

    hprev = xp.concatenate([saved.h0[None], saved.hs[:-1]], axis=0) if T else saved.hs
    if rec:
        hm = (hprev[None] * mr[:, None]).reshape(4, T * B, U)
        d_rk = from_per_gate(xp.matmul(hm.transpose(0, 2, 1), dzg))
    else:
        d_rk = xp.matmul(hprev.reshape(T * B, U).T, dz2)

    if mx is not None and mx.shape[0] == 4:
        xk = (x[None] * mx[:, None]).reshape(4, T * B, F)
        d_k = from_per_gate(xp.matmul(xk.transpose(0, 2, 1), dzg))
        wkt = per_gate(xp, w.kernel, U).transpose(0, 2, 1)
        dxk = xp.matmul(dzg, wkt).reshape(4, T, B, F) * mx[:, None]
        dx = dxk.sum(axis=0)
    else:
        xin = x * mx[0] if mx is not None else x
        d_k = xp.matmul(xin.reshape(T * B, F).T, dz2)
        dx = xp.matmul(dz2, w.kernel.T).reshape(T, B, F)
        if mx is not None:
            dx = dx * mx[0]

    d_bias = None
    if spec.use_bias:
        d_bias = xp.empty((4 * U,), dt)
        if T * B == 0:
            d_bias[...] = 0
        elif rec:
            device.colsum(dZ, ts=4 * B * U, bs=U, gs=B * U, T=T, B=B, U=U, out=d_bias)
        else:
            device.colsum(dZ, ts=B * 4 * U, bs=4 * U, gs=U, T=T, B=B, U=U, out=d_bias)
    return Gradients(inputs=xp.ascontiguousarray(dx, dtype=dt), h0=dh0, c0=dc0,
                     kernel=xp.ascontiguousarray(d_k, dtype=dt),
                     recurrent_kernel=xp.ascontiguousarray(d_rk, dtype=dt), bias=d_bias)


def colsum_chunks(rows: int, U: int, target_threads: int = 1 << 16) -> tuple[int, int]:
    """(rows_per_chunk, chunks) for the two-pass bias sum: depends on the shape only, so the
    summation order (and the result) is the same on every device and every run."""
    cols = 4 * U
    chunks = max(1, min(rows, target_threads // max(cols, 1)))
    rows_per_chunk = -(-rows // chunks)
    chunks = -(-rows // rows_per_chunk)
    return rows_per_chunk, chunks
