"""The contract every compute path implements (NumPy reference, cuDNN, CUDA kernels).

The layer (`lstm_gpu.layer`) does everything common to all paths once: input validation,
layout (batch-major <-> time-major), `go_backwards` ordering, dropout mask drawing, stateful
bookkeeping, regularization. A path sees one canonical problem:

    x      (T, B, F)  time-major, already in processing order (flipped for go_backwards),
                      compute dtype (float32 or float64), C-contiguous.
    mask   (T, B)     bool, in the same processing order, or None (every step valid).
    h0, c0 (B, U)     compute dtype.
    weights           kernel (F, 4U), recurrent_kernel (U, 4U), bias (4U,) or None;
                      Keras layout, gate blocks i, f, c, o.
    dropout           DropoutMasks or None (only when training with a non-zero rate).

and returns ForwardResult(last (B, U), sequence (T, B, U), h (B, U), c (B, U), saved).
`sequence` follows the masked-step rules below; `last` is the output of the last processed
step. `saved` is whatever the path's `backward` needs (None unless training).

Masked steps (Keras, TF-backend rule): h and c are carried; the output repeats the previous
output, which starts as zeros before the first valid step, or is zero with
`zero_output_for_mask`.

backward(saved, d_last, d_sequence, d_h, d_c) -> Gradients, each d_* (same shapes as the
forward outputs) possibly None meaning zero. Gradients are for x (T, B, F) in the same
processing order and layout as the forward input, h0, c0 and the weights in Keras layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

from ..activations import Activation


@dataclass(frozen=True)
class CellSpec:
    """The static description of one LSTM call that a path needs."""

    units: int
    activation: Activation
    recurrent_activation: Activation
    use_bias: bool
    zero_output_for_mask: bool
    implementation: int  # 1: per-gate matmuls, 2: fused matmul; same function
    unroll: bool = False  # same numbers; paths may ignore it


@dataclass
class Weights:
    """Layer weights as arrays of the compute dtype, on the device of x."""

    kernel: Any  # (F, 4U)
    recurrent_kernel: Any  # (U, 4U)
    bias: Optional[Any]  # (4U,) or None without bias


@dataclass
class DropoutMasks:
    """Dropout masks for one training call, constant over time, already scaled by 1/(1-rate).

    inputs: None or (G, B, F) with G = 1 (implementation 2: one mask for all gates) or
            G = 4 (implementation 1: one mask per gate i, f, c, o).
    recurrent: None or (4, B, U), one mask per gate i, f, c, o (implementation 1).
    """

    inputs: Optional[Any] = None
    recurrent: Optional[Any] = None


@dataclass
class ForwardResult:
    last: Any  # (B, U)
    sequence: Any  # (T, B, U)
    h: Any  # (B, U)
    c: Any  # (B, U)
    saved: Any = None


@dataclass
class Gradients:
    inputs: Any  # (T, B, F), processing order, time-major
    h0: Any  # (B, U)
    c0: Any  # (B, U)
    kernel: Any  # (F, 4U)
    recurrent_kernel: Any  # (U, 4U)
    bias: Optional[Any]  # (4U,) or None without bias


class Path(Protocol):
    """What `lstm_gpu.paths.<name>` modules provide (module-level functions)."""

    NAME: str

    def forward(self, weights: Weights, x: Any, mask: Any, h0: Any, c0: Any,
                spec: CellSpec, dropout: Optional[DropoutMasks],
                training: bool) -> ForwardResult: ...

    def backward(self, saved: Any, d_last: Any, d_sequence: Any, d_h: Any,
                 d_c: Any) -> Gradients: ...
