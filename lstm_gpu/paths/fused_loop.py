"""The kernel path's algorithm, written once for any array module and any pointwise backend.

`paths/cuda_kernels.py` runs it on CuPy arrays with the CUDA kernels of kernels/lstm_kernels.cu;
the tests run it on NumPy arrays with the same per-element code compiled for the host
(kernels/lstm_host.cpp through ctypes), which checks every index and layout without a GPU.

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

Time loops are closures over a `LoopArgs` record; a `runner(kind, loop_args, body)` hook lets
the CUDA path replay them as CUDA graphs keyed on every array and scalar in the record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

from .._xp import array_module
from ..errors import PathUnavailable
from .base import CellSpec, DropoutMasks, ForwardResult, Gradients, Weights


class PointwiseOps(Protocol):
    """The fused per-step element-wise operations (CUDA kernels or the host library)."""

    def fwd_step(self, *, xz, xz_gs, xz_bs, rz, rz_gs, rz_bs, bias, h_prev, c_prev, out_prev,
                 mask, rec_mask, h_rec, h, c, out, z_save, B, U, act, ract,
                 zero_output) -> None: ...

    def bwd_step(self, *, z, c_prev, c, mask, d_out, g_out, dh, dh_rec, rec_mask, dc, dz,
                 dz_gs, dz_bs, B, U, act, ract, zero_output) -> None: ...

    def colsum(self, src, *, ts, bs, gs, T, B, U, out) -> None: ...


Runner = Callable[[str, "LoopArgs", Callable[[], None]], None]


def run_eagerly(kind: str, args: "LoopArgs", body: Callable[[], None]) -> None:
    body()


@dataclass
class LoopArgs:
    """Everything a time loop touches: arrays (by identity) and scalars. A CUDA graph of the
    loop is valid exactly when every array here has the same address, shape and strides and
    every scalar is equal (see `graph_key`)."""

    arrays: dict = field(default_factory=dict)
    scalars: dict = field(default_factory=dict)

    def __getattr__(self, name):
        d = self.__dict__
        if name in d.get("arrays", {}):
            return d["arrays"][name]
        if name in d.get("scalars", {}):
            return d["scalars"][name]
        raise AttributeError(name)


@dataclass
class Saved:
    """What backward needs (kept only when training)."""

    spec: CellSpec
    weights: Weights
    x: Any
    mask_u8: Any  # (T, B) uint8 or None
    h0: Any
    c0: Any
    dropout: Optional[DropoutMasks]
    z: Any  # (T, B, 4U) pre-activations (bias included)
    hs: Any  # (T, B, U) h state after each step
    cs: Any  # (T, B, U) c state after each step


def _kernel_ids(spec: CellSpec) -> tuple[int, int]:
    act, ract = spec.activation.kernel_id, spec.recurrent_activation.kernel_id
    if act < 0 or ract < 0:
        raise PathUnavailable(
            "the CUDA kernel path has no kernel form for a Python callable activation; "
            "the layer runs the xp-generic reference instead"
        )
    return act, ract


def _dropout_parts(dropout: Optional[DropoutMasks]):
    if dropout is None:
        return None, None
    mx, mr = dropout.inputs, dropout.recurrent
    if mx is not None and (mx.ndim != 3 or mx.shape[0] not in (1, 4)):
        raise ValueError(f"input dropout masks must be (1|4, B, F), got {mx.shape}")
    if mr is not None and (mr.ndim != 3 or mr.shape[0] != 4):
        raise ValueError(f"recurrent dropout masks must be (4, B, U), got {mr.shape}")
    return mx, mr


def per_gate(xp, w, U):
    """(R, 4U) -> contiguous (4, R, U): the four gate blocks of a Keras weight."""
    return xp.ascontiguousarray(w.reshape(w.shape[0], 4, U).transpose(1, 0, 2))


def from_per_gate(g):
    """(4, R, U) -> (R, 4U)."""
    return g.transpose(1, 0, 2).reshape(g.shape[1], 4 * g.shape[2])


def _input_projection(xp, x, W, mx, U):
    """XZ and its (per-step array, gate stride, batch stride)."""
    T, B, F = x.shape
    if mx is not None and mx.shape[0] == 4:
        xk = (x[None] * mx[:, None]).reshape(4, T * B, F)
        xz = xp.matmul(xk, per_gate(xp, W, U)).reshape(4, T, B, U)
        return xz.transpose(1, 0, 2, 3), T * B * U, U  # step view xz[t] is (4, B, U)
    xin = x * mx[0] if mx is not None else x
    xz = xp.matmul(xin.reshape(T * B, F), W).reshape(T, B, 4 * U)
    return xz, U, 4 * U


def forward(ops: PointwiseOps, weights: Weights, x, mask, h0, c0, spec: CellSpec,
            dropout: Optional[DropoutMasks], training: bool,
            runner: Runner = run_eagerly) -> ForwardResult:
    act, ract = _kernel_ids(spec)
    xp = array_module(x)
    T, B, _ = x.shape
    U = spec.units
    dt = x.dtype
    mx, mr = _dropout_parts(dropout)
    bias = weights.bias if spec.use_bias else None
    if bias is not None:
        bias = xp.ascontiguousarray(bias, dtype=dt)
    mask_u8 = None if mask is None else xp.ascontiguousarray(mask, dtype=xp.uint8)
    h0 = xp.ascontiguousarray(h0, dtype=dt)
    c0 = xp.ascontiguousarray(c0, dtype=dt)

    xz, xz_gs, xz_bs = _input_projection(xp, x, weights.kernel, mx, U)
    a = LoopArgs()
    a.arrays.update(xz=xz, bias=bias, h0=h0, c0=c0, mask=mask_u8, mr=mr,
                    seq=xp.empty((T, B, U), dt))
    if mr is not None:
        a.arrays.update(uw=per_gate(xp, weights.recurrent_kernel, U),
                        rz=xp.empty((4, B, U), dt), h_rec=xp.ascontiguousarray(h0[None] * mr))
        rz_gs, rz_bs = B * U, U
    else:
        a.arrays.update(uw=xp.ascontiguousarray(weights.recurrent_kernel), rz=xp.empty((B, 4 * U), dt),
                        h_rec=None)
        rz_gs, rz_bs = U, 4 * U
    if training:
        a.arrays.update(hs=xp.empty((T, B, U), dt), cs=xp.empty((T, B, U), dt),
                        z=xp.empty((T, B, 4 * U), dt), h=None, c=None)
    else:
        a.arrays.update(hs=None, cs=None, z=None, h=h0.copy(), c=c0.copy())
    a.scalars.update(T=T, B=B, U=U, act=act, ract=ract, zero_output=int(spec.zero_output_for_mask),
                     xz_gs=xz_gs, xz_bs=xz_bs, rz_gs=rz_gs, rz_bs=rz_bs)

    def body():
        # Locals, not LoopArgs lookups, inside the loop: eager mode runs this per step.
        arr, sc = a.arrays, a.scalars
        hs, cs, zs, seq, mask, mr = (arr[k] for k in ("hs", "cs", "z", "seq", "mask", "mr"))
        xz, uw, rz, h_rec = arr["xz"], arr["uw"], arr["rz"], arr["h_rec"]
        step = dict(xz_gs=sc["xz_gs"], xz_bs=sc["xz_bs"], rz=rz, rz_gs=sc["rz_gs"],
                    rz_bs=sc["rz_bs"], bias=arr["bias"], rec_mask=mr, h_rec=h_rec, B=sc["B"],
                    U=sc["U"], act=sc["act"], ract=sc["ract"], zero_output=sc["zero_output"])
        h_prev, c_prev = arr["h0"], arr["c0"]
        for t in range(sc["T"]):
            if hs is not None:
                h, c, z = hs[t], cs[t], zs[t]
            else:
                h_prev, c_prev, h, c, z = arr["h"], arr["c"], arr["h"], arr["c"], None
            out = seq[t]
            xp.matmul(h_rec if mr is not None else h_prev, uw, out=rz)
            ops.fwd_step(xz=xz[t], h_prev=h_prev, c_prev=c_prev,
                         out_prev=None if t == 0 else seq[t - 1],
                         mask=None if mask is None else mask[t], h=h, c=c, out=out, z_save=z,
                         **step)
            h_prev, c_prev = h, c

    if T > 0 and B > 0:
        runner("forward", a, body)
    seq = a.seq
    if T == 0:
        last, h_last, c_last = xp.zeros((B, U), dt), h0.copy(), c0.copy()
    elif training:
        last, h_last, c_last = seq[T - 1], a.hs[T - 1], a.cs[T - 1]
    else:
        last, h_last, c_last = seq[T - 1], a.h, a.c
    saved = None
    if training:
        saved = Saved(spec=spec, weights=weights, x=x, mask_u8=mask_u8, h0=h0, c0=c0,
                      dropout=dropout, z=a.z, hs=a.hs, cs=a.cs)
    return ForwardResult(last=last, sequence=seq, h=h_last, c=c_last, saved=saved)


def _grad_or_zeros(xp, g, shape, dt):
    return xp.zeros(shape, dt) if g is None else xp.array(g, dtype=dt, copy=True, order="C")


def backward(ops: PointwiseOps, saved: Saved, d_last, d_sequence, d_h, d_c,
             runner: Runner = run_eagerly) -> Gradients:
    if saved is None:
        raise ValueError("backward needs the `saved` of a forward call with training=True")
    spec, w, x = saved.spec, saved.weights, saved.x
    act, ract = _kernel_ids(spec)
    xp = array_module(x)
    T, B, F = x.shape
    U = spec.units
    dt = x.dtype
    mx, mr = _dropout_parts(saved.dropout)

    a = LoopArgs()
    a.arrays.update(z=saved.z, cs=saved.cs, c0=saved.c0, mask=saved.mask_u8, mr=mr,
                    g_out=_grad_or_zeros(xp, d_last, (B, U), dt),
                    dh=_grad_or_zeros(xp, d_h, (B, U), dt),
                    dc=_grad_or_zeros(xp, d_c, (B, U), dt),
                    d_seq=None if d_sequence is None else xp.ascontiguousarray(d_sequence, dt))
    if mr is not None:
        ukt = per_gate(xp, w.recurrent_kernel, U).transpose(0, 2, 1)
        a.arrays.update(dZ=xp.empty((T, 4, B, U), dt), dh_rec=xp.empty((4, B, U), dt),
                        ut=xp.ascontiguousarray(ukt))
        dz_gs, dz_bs = B * U, U
    else:
        a.arrays.update(dZ=xp.empty((T, B, 4 * U), dt), dh_rec=xp.empty((B, U), dt),
                        ut=xp.ascontiguousarray(w.recurrent_kernel.T))
        dz_gs, dz_bs = U, 4 * U
    a.scalars.update(T=T, B=B, U=U, act=act, ract=ract, zero_output=int(spec.zero_output_for_mask),
                     dz_gs=dz_gs, dz_bs=dz_bs)

    def body():
        arr, sc = a.arrays, a.scalars
        zs, cs, c0, mask, d_seq, dZ, ut, dh_rec = (
            arr[k] for k in ("z", "cs", "c0", "mask", "d_seq", "dZ", "ut", "dh_rec"))
        step = dict(g_out=arr["g_out"], dh=arr["dh"], rec_mask=arr["mr"], dc=arr["dc"],
                    dz_gs=sc["dz_gs"], dz_bs=sc["dz_bs"], B=sc["B"], U=sc["U"], act=sc["act"],
                    ract=sc["ract"], zero_output=sc["zero_output"])
        T = sc["T"]
        for t in range(T - 1, -1, -1):
            dz = dZ[t]
            ops.bwd_step(z=zs[t], c_prev=c0 if t == 0 else cs[t - 1], c=cs[t],
                         mask=None if mask is None else mask[t],
                         d_out=None if d_seq is None else d_seq[t],
                         dh_rec=None if t == T - 1 else dh_rec, dz=dz, **step)
            xp.matmul(dz, ut, out=dh_rec)

    if T > 0 and B > 0:
        runner("backward", a, body)
        rec = (a.dh_rec * mr).sum(axis=0) if mr is not None else a.dh_rec
        dh0 = a.dh + rec
    else:
        dh0 = a.dh
    dc0 = a.dc
    return _weight_gradients(ops, saved, a.dZ, mx, mr, dh0, dc0)


def _weight_gradients(ops, saved: Saved, dZ, mx, mr, dh0, dc0) -> Gradients:
    spec, w, x = saved.spec, saved.weights, saved.x
    xp = array_module(x)
    T, B, F = x.shape
    U = spec.units
    dt = x.dtype
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
            ops.colsum(dZ, ts=4 * B * U, bs=U, gs=B * U, T=T, B=B, U=U, out=d_bias)
        else:
            ops.colsum(dZ, ts=B * 4 * U, bs=4 * U, gs=U, T=T, B=B, U=U, out=d_bias)
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
