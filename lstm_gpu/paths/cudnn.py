"""The cuDNN path: Keras's LSTM through cuDNN 9's v8 RNN API (`lstm_gpu.cuda.cudnn`).

Contract: `lstm_gpu.paths.base`. Three modules:

- this one: the contract and the glue (`FrontAlignedPath`), pure array code that a NumPy
  stand-in for cuDNN runs on the CPU in the tests;
- `cudnn_weights`: Keras weights <-> cuDNN's weight space (packed on every call: an in-place
  edit of a weight always reaches cuDNN; see that module for the options weighed);
- `cudnn_runtime`: `CudnnCore`, the cuDNN calls (handles, descriptors, streams, operands).

The call, for x (T, B, F) time-major in processing order:

1. mask -> per-sample runs (`masking.mask_runs`). Rows must each be one contiguous run of
   valid steps: right-padded, left-padded (Keras's `pad_sequences` default, or a
   right-padded mask under go_backwards) or both; a row with a hole raises `PathUnavailable`.
2. Input dropout (implementation 2, one mask for all gates): x * mask, as Keras 3.15 does
   before its own cuDNN call (keras/src/layers/rnn/lstm.py, `LSTM.inner_loop`: ``dp_sequences
   = sequences * dp_mask``); backward multiplies dx by the same mask. Implementation 1's four
   masks and recurrent dropout raise `PathUnavailable`.
3. Runs are shifted to the front (a gather for runs not starting at step 0) and every padded
   step of x is zeroed, right-padded ones included: 0 * NaN is NaN, so NaN or Inf in the
   padding must not reach the input-projection GEMM, whose weight gradient sums all T * B
   rows. Fully masked samples run one dummy step on zeros (cuDNN never sees length 0).
4. cuDNN runs the front-aligned batch with per-sample lengths (`CudnnCore`).
5. Outputs go back to processing order with Keras's masked-step values
   (`masking.restore_outputs`); fully masked samples keep h0/c0 (`masking.select_states`).
   backward is the exact adjoint of each step.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .. import dispatch
from .._xp import array_module, is_cupy_array
from ..activations import KERNEL_IDS
from ..errors import CudnnNotAvailable, PathUnavailable
from . import masking
from .base import CellSpec, DropoutMasks, ForwardResult, Gradients, Weights
from .cudnn_weights import WeightLayout, pack, unpack_weight_grads

NAME = "cudnn"
SUPPORTED_DTYPES = dispatch.SUPPORTED_DTYPES


def _check_supported(weights: Weights, x: Any, spec: CellSpec) -> None:
    """The rules the dispatcher checks, checked again on what reaches the path."""
    problems = []
    if not is_cupy_array(x):
        problems.append("input is not a CuPy array")
    elif x.ndim != 3:
        problems.append(f"x must be (T, B, F), got shape {x.shape}")
    elif 0 in x.shape:
        problems.append(f"empty input of shape {x.shape}")
    if np.dtype(x.dtype) not in SUPPORTED_DTYPES:
        problems.append(dispatch.REASON_DTYPE)
    if spec.activation.kernel_id != KERNEL_IDS["tanh"]:
        problems.append(dispatch.REASON_ACTIVATION)
    if spec.recurrent_activation.kernel_id != KERNEL_IDS["sigmoid"]:
        problems.append(dispatch.REASON_RECURRENT_ACTIVATION)
    if not spec.use_bias or weights.bias is None:
        problems.append(dispatch.REASON_USE_BIAS)
    if problems:
        raise PathUnavailable("; ".join(problems))


def _input_mask(dropout: Optional[DropoutMasks]) -> Any:
    """The (B, F) input dropout mask x is multiplied by, or None; PathUnavailable otherwise."""
    if dropout is None:
        return None
    problems = []
    if dropout.recurrent is not None:
        problems.append(dispatch.REASON_RECURRENT_DROPOUT)
    if dropout.inputs is not None and dropout.inputs.shape[0] != 1:
        problems.append(dispatch.REASON_DROPOUT)
    if problems:
        raise PathUnavailable("; ".join(problems))
    return None if dropout.inputs is None else dropout.inputs[0]


# --- the glue: masks and dropout around a front-aligned runner ------------------------------


@dataclass
class _Saved:
    core: Any  # None when every sample was fully masked (nothing ran)
    token: Any
    layout: Optional[WeightLayout]
    runs: masking.MaskRuns
    input_mask: Any  # (B, F) or None
    zero_output_for_mask: bool
    seq_shape: tuple  # (T, B, U)
    x_shape: tuple  # (T, B, F)
    dtype: Any
    h0: Any


class FrontAlignedPath:
    """`base.Path` on a runner of front-aligned batches with per-sample lengths.

    core: `cudnn_runtime.CudnnCore` (a NumPy stand-in of cuDNN in the tests), providing
    ``weight_layout(x, units)``, ``forward(ws, x, lengths, h0, c0, training) -> (y, hy, cy,
    token)`` and ``backward(token, dy, dhy, dcy) -> (dx, dhx, dcx, dws)``.
    """

    NAME = NAME

    def __init__(self, core: Any):
        self.core = core

    def forward(self, weights: Weights, x, mask, h0, c0, spec: CellSpec,
                dropout: Optional[DropoutMasks], training: bool) -> ForwardResult:
        xp = array_module(x)
        steps, batch, _ = x.shape
        input_mask = _input_mask(dropout)
        runs = masking.full_runs(steps, batch) if mask is None else masking.mask_runs(mask)
        if runs is None:
            raise PathUnavailable(dispatch.REASON_MASK)
        seq_shape = (steps, batch, spec.units)
        saved = _Saved(None, None, None, runs, input_mask, spec.zero_output_for_mask,
                       seq_shape, x.shape, x.dtype, h0)
        if runs.all_empty:
            seq = xp.zeros(seq_shape, x.dtype)
            return ForwardResult(seq[-1], seq, h0, c0, saved if training else None)
        layout = self.core.weight_layout(x, spec.units)
        ws = pack(weights, layout, x.dtype)
        x_in = x if input_mask is None else x * input_mask[None]
        x_front = masking.shift_to_front(x_in, runs)
        y, hy, cy, token = self.core.forward(ws, x_front, runs.kernel_lengths(), h0, c0,
                                             training)
        seq = masking.restore_outputs(y, hy, runs, spec.zero_output_for_mask)
        h = masking.select_states(hy, h0, runs)
        c = masking.select_states(cy, c0, runs)
        if not training:
            return ForwardResult(seq[-1], seq, h, c, None)
        saved.core, saved.token, saved.layout = self.core, token, layout
        return ForwardResult(seq[-1], seq, h, c, saved)

    def backward(self, saved: _Saved, d_last, d_sequence, d_h, d_c) -> Gradients:
        runs = saved.runs
        xp = array_module(saved.h0)
        zeros_bu = xp.zeros(saved.seq_shape[1:], saved.dtype)
        d_h = zeros_bu if d_h is None else d_h
        d_c = zeros_bu if d_c is None else d_c
        f, u = saved.x_shape[2], saved.seq_shape[2]
        if saved.core is None:  # every sample fully masked: outputs are constants
            return Gradients(xp.zeros(saved.x_shape, saved.dtype), d_h.copy(), d_c.copy(),
                             xp.zeros((f, 4 * u), saved.dtype),
                             xp.zeros((u, 4 * u), saved.dtype), xp.zeros((4 * u,), saved.dtype))
        like = xp.empty(saved.seq_shape, saved.dtype)
        dy, dh_last = masking.route_output_grads(d_sequence, d_last, runs,
                                                 saved.zero_output_for_mask, like)
        dhy, dh0_direct = masking.split_state_grad(d_h + dh_last, runs)
        dcy, dc0_direct = masking.split_state_grad(d_c, runs)
        dx_front, dhx, dcx, dws = saved.core.backward(saved.token, dy, dhy, dcy)
        dx = masking.shift_back(dx_front, runs)  # zeroes what cuDNN left at padding
        if saved.input_mask is not None:
            dx = dx * saved.input_mask[None]
        dh0 = masking.select_states(dhx, dh0_direct, runs)
        dc0 = masking.select_states(dcx, dc0_direct, runs)
        layout = saved.layout
        dk, drk, db = unpack_weight_grads(dws, layout.blocks, f, u, canonical=layout.canonical)
        return Gradients(dx, dh0, dc0, dk, drk, db)


_path: Optional[FrontAlignedPath] = None


def _cudnn_path() -> FrontAlignedPath:
    global _path
    if _path is None:
        from .cudnn_runtime import CudnnCore

        _path = FrontAlignedPath(CudnnCore())
    return _path


def _on_device_of(a):
    return a.device if is_cupy_array(a) else nullcontext()


# --- the contract ---------------------------------------------------------------------------


def forward(weights: Weights, x: Any, mask: Any, h0: Any, c0: Any, spec: CellSpec,
            dropout: Optional[DropoutMasks], training: bool) -> ForwardResult:
    """`base.Path.forward` on cuDNN. Raises PathUnavailable (fall back) or CudnnError."""
    _check_supported(weights, x, spec)
    from ..cuda import cudnn

    why = cudnn.unavailable_reason()
    if why is not None:
        raise PathUnavailable(f"{dispatch.REASON_UNAVAILABLE}: {why}")
    try:
        with x.device:  # every allocation of the call on x's GPU
            return _cudnn_path().forward(weights, x, mask, h0, c0, spec, dropout, training)
    except CudnnNotAvailable as e:  # e.g. cudnnCreate failed on this device earlier
        raise PathUnavailable(f"{dispatch.REASON_UNAVAILABLE}: {e}") from e


def backward(saved: _Saved, d_last: Any, d_sequence: Any, d_h: Any, d_c: Any) -> Gradients:
    """`base.Path.backward` for a training `forward` of this path."""
    if saved is None:
        raise ValueError("backward needs the `saved` of a forward run with training=True")
    with _on_device_of(saved.h0):
        return _cudnn_path().backward(saved, d_last, d_sequence, d_h, d_c)
