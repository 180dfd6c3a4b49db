"""The reference path: the Keras LSTM written out with array operations.

It is the specification every other path is tested against. It is array-library generic:
given NumPy arrays it runs on the CPU (path "numpy"); given CuPy arrays it runs the same
algorithm with CuPy operations (path "cupy-reference", the fallback for Python-callable
activations on the GPU).

Notation (time-major, processing order; U = units, gate blocks i, f, c, o):

    xw_t = x_t @ W + b                      all T at once: one (T*B, F) x (F, 4U) product
    z_t  = xw_t + h_{t-1} @ R               one (B, U) x (U, 4U) product per step
    i, f, o = sigma(z_i), sigma(z_f), sigma(z_o);   g = phi(z_c)
    c_new = f * c_{t-1} + i * g;   h_new = o * phi(c_new)
    m_t:  h_t = m ? h_new : h_{t-1};   c_t = m ? c_new : c_{t-1}
          out_t = m ? h_new : (zero_output_for_mask ? 0 : out_{t-1}),   out_{-1} = 0

With dropout (implementation 1), gate k sees ``x * mx_k`` and ``h * mr_k``.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .._xp import array_module
from .base import CellSpec, DropoutMasks, ForwardResult, Gradients, Weights

NAME = "numpy"


@dataclass
class Saved:
    """What backward needs, all time-major (T, B, ...)."""

    x: Any  # (T, B, F)
    mask: Any  # (T, B, 1) compute dtype, or None
    weights: Weights
    spec: CellSpec
    dropout: Optional[DropoutMasks]
    h_prev: Any  # (T, B, U) state entering each step
    c_prev: Any  # (T, B, U)
    z: Any  # (T, B, 4U) pre-activations
    gates: Any  # (T, B, 4U) i, f, g, o after activation
    c_new: Any  # (T, B, U) unmasked new carry


def _gate_blocks(a, units: int):
    """(..., 4U) -> (4, ..., U) view-like split into i, f, c, o."""
    return [a[..., k * units:(k + 1) * units] for k in range(4)]


def _input_projection(x, weights: Weights, units: int, dropout: Optional[DropoutMasks]):
    """xw (T, B, 4U) = x @ kernel (+ bias), per-gate when there are per-gate input masks."""
    xp = array_module(x)
    T, B, F = x.shape
    masks = dropout.inputs if dropout is not None else None
    if masks is None or masks.shape[0] == 1:
        xin = x if masks is None else x * masks[0]
        xw = (xin.reshape(T * B, F) @ weights.kernel).reshape(T, B, 4 * units)
    else:
        blocks = _gate_blocks(weights.kernel, units)
        xw = xp.concatenate(
            [((x * masks[k]).reshape(T * B, F) @ blocks[k]).reshape(T, B, units)
             for k in range(4)], axis=-1)
    if weights.bias is not None:
        xw += weights.bias
    return xw


def _recurrent_kernel_per_gate(recurrent_kernel, units: int):
    """(U, 4U) -> (4, U, U): gate k's block of the recurrent kernel."""
    return recurrent_kernel.reshape(units, 4, units).transpose(1, 0, 2)


def _recurrent_term(h, rk, rk_gates, rec_masks, units: int):
    """h @ R, or per gate (h * mr_k) @ R_k with recurrent dropout masks (4, B, U)."""
    if rec_masks is None:
        return h @ rk
    xp = array_module(h)
    per_gate = (h[None] * rec_masks) @ rk_gates  # (4, B, U)
    return xp.concatenate(list(per_gate), axis=-1)


def forward(weights: Weights, x, mask, h0, c0, spec: CellSpec,
            dropout: Optional[DropoutMasks], training: bool) -> ForwardResult:
    xp = array_module(x)
    T, B, _ = x.shape
    U = spec.units
    act, rec_act = spec.activation, spec.recurrent_activation
    rec_masks = dropout.recurrent if dropout is not None else None
    rk_gates = _recurrent_kernel_per_gate(weights.recurrent_kernel, U) if rec_masks is not None \
        else None
    m = None if mask is None else mask.astype(x.dtype)[..., None]  # (T, B, 1)

    xw = _input_projection(x, weights, U, dropout)
    sequence = xp.empty((T, B, U), dtype=x.dtype)
    if training:
        h_prev_all = xp.empty((T, B, U), dtype=x.dtype)
        c_prev_all = xp.empty_like(h_prev_all)
        z_all = xp.empty((T, B, 4 * U), dtype=x.dtype)
        gates_all = xp.empty_like(z_all)
        c_new_all = xp.empty_like(h_prev_all)
    h, c = h0, c0
    out = xp.zeros((B, U), dtype=x.dtype)
    errstate = np.errstate(over="ignore") if xp is np else nullcontext()
    with errstate:
        for t in range(T):
            z = xw[t] + _recurrent_term(h, weights.recurrent_kernel, rk_gates, rec_masks, U)
            zi, zf, zc, zo = _gate_blocks(z, U)
            i, f, g, o = rec_act(zi), rec_act(zf), act(zc), rec_act(zo)
            c_new = f * c + i * g
            h_new = o * act(c_new)
            if training:
                h_prev_all[t], c_prev_all[t], z_all[t], c_new_all[t] = h, c, z, c_new
                gates_all[t] = xp.concatenate([i, f, g, o], axis=-1)
            if m is None:
                h, c, out = h_new, c_new, h_new
            else:
                mt = m[t]
                h = xp.where(mt > 0, h_new, h)
                c = xp.where(mt > 0, c_new, c)
                out = xp.where(mt > 0, h_new, 0 if spec.zero_output_for_mask else out)
            sequence[t] = out
    saved = None
    if training:
        saved = Saved(x, m, weights, spec, dropout, h_prev_all, c_prev_all, z_all, gates_all,
                      c_new_all)
    return ForwardResult(out, sequence, h, c, saved)


def _zeros_if_none(a, shape, like):
    xp = array_module(like)
    return xp.zeros(shape, dtype=like.dtype) if a is None else a


def backward(saved: Saved, d_last, d_sequence, d_h, d_c) -> Gradients:
    x, m, w, spec = saved.x, saved.mask, saved.weights, saved.spec
    xp = array_module(x)
    T, B, F = x.shape
    U = spec.units
    act, rec_act = spec.activation, spec.recurrent_activation
    rec_masks = saved.dropout.recurrent if saved.dropout is not None else None
    in_masks = saved.dropout.inputs if saved.dropout is not None else None
    rk_gates = _recurrent_kernel_per_gate(w.recurrent_kernel, U) if rec_masks is not None \
        else None

    dh = _zeros_if_none(d_h, (B, U), x).copy()
    dc = _zeros_if_none(d_c, (B, U), x).copy()
    d_out_carry = _zeros_if_none(d_last, (B, U), x).copy()
    dz_all = xp.empty((T, B, 4 * U), dtype=x.dtype)
    errstate = np.errstate(over="ignore") if xp is np else nullcontext()
    with errstate:
        for t in range(T - 1, -1, -1):
            g_out = d_out_carry if d_sequence is None else d_out_carry + d_sequence[t]
            if m is None:
                dh_new, dc_new = g_out + dh, dc
                dh_keep = dc_keep = d_out_carry = 0
            else:
                mt = m[t]
                keep = 1 - mt
                dh_new, dc_new = mt * (g_out + dh), mt * dc
                dh_keep, dc_keep = keep * dh, keep * dc
                d_out_carry = 0 * g_out if spec.zero_output_for_mask else keep * g_out
            i, f, g, o = _gate_blocks(saved.gates[t], U)
            zi, zf, zc, zo = _gate_blocks(saved.z[t], U)
            c_new = saved.c_new[t]
            phi_c = act(c_new)
            do = dh_new * phi_c
            dc_new = dc_new + dh_new * o * act.grad(c_new, phi_c)
            dz = xp.concatenate([
                dc_new * g * rec_act.grad(zi, i),
                dc_new * saved.c_prev[t] * rec_act.grad(zf, f),
                dc_new * i * act.grad(zc, g),
                do * rec_act.grad(zo, o),
            ], axis=-1)
            dz_all[t] = dz
            if rec_masks is None:
                dh_rec = dz @ w.recurrent_kernel.T
            else:
                dz_gates = xp.stack(_gate_blocks(dz, U))  # (4, B, U)
                dh_rec = ((dz_gates @ rk_gates.transpose(0, 2, 1)) * rec_masks).sum(axis=0)
            dh = dh_rec + dh_keep
            dc = dc_new * f + dc_keep

    dz_flat = dz_all.reshape(T * B, 4 * U)
    x_flat = x.reshape(T * B, F)
    h_prev_flat = saved.h_prev.reshape(T * B, U)
    dx, d_kernel = _input_gradients(x_flat, dz_flat, w.kernel, in_masks, U, T, B)
    d_recurrent = _recurrent_weight_gradient(h_prev_flat, dz_flat, rec_masks, U, T, B)
    d_bias = dz_flat.sum(axis=0) if w.bias is not None else None
    return Gradients(dx.reshape(T, B, F), dh, dc, d_kernel, d_recurrent, d_bias)


def _input_gradients(x_flat, dz_flat, kernel, in_masks, U, T, B):
    """dx (T*B, F) and d kernel (F, 4U), per gate when there are per-gate input masks."""
    xp = array_module(x_flat)
    F = x_flat.shape[1]
    if in_masks is None:
        return dz_flat @ kernel.T, x_flat.T @ dz_flat
    tile = lambda mk: xp.broadcast_to(mk, (T, B, F)).reshape(T * B, F)  # noqa: E731
    if in_masks.shape[0] == 1:
        mk = tile(in_masks[0])
        return (dz_flat @ kernel.T) * mk, (x_flat * mk).T @ dz_flat
    dz_gates = _gate_blocks(dz_flat, U)
    k_gates = _gate_blocks(kernel, U)
    dx = sum((dz_gates[k] @ k_gates[k].T) * tile(in_masks[k]) for k in range(4))
    d_kernel = xp.concatenate(
        [(x_flat * tile(in_masks[k])).T @ dz_gates[k] for k in range(4)], axis=-1)
    return dx, d_kernel


def _recurrent_weight_gradient(h_prev_flat, dz_flat, rec_masks, U, T, B):
    xp = array_module(h_prev_flat)
    if rec_masks is None:
        return h_prev_flat.T @ dz_flat
    dz_gates = _gate_blocks(dz_flat, U)
    blocks = []
    for k in range(4):
        mk = xp.broadcast_to(rec_masks[k], (T, B, U)).reshape(T * B, U)
        blocks.append((h_prev_flat * mk).T @ dz_gates[k])
    return xp.concatenate(blocks, axis=-1)
