"""The path of an empty batch (B == 0): nothing to compute, results of the right shapes.

A data pipeline's last batch can be empty and Keras returns empty outputs for it, so the
layer sends every call with B == 0 here: no compute path ever sees an empty batch. Contract:
`paths/base.py`. The outputs are (0, U) and (T, 0, U); the input and state gradients are
empty; the weight gradients are zero (the layer adds the regularizers' gradients).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .._xp import array_module
from .base import CellSpec, DropoutMasks, ForwardResult, Gradients, Weights

NAME = "empty-batch"


@dataclass
class Saved:
    x: Any  # (T, 0, F): holds no data, gives backward its shape, dtype and library
    spec: CellSpec


def forward(weights: Weights, x, mask, h0, c0, spec: CellSpec,
            dropout: Optional[DropoutMasks], training: bool) -> ForwardResult:
    if x.shape[1] != 0:
        raise ValueError(f"the {NAME} path serves B == 0 only; got x of shape {x.shape}")
    sequence = array_module(x).zeros((x.shape[0], 0, spec.units), x.dtype)
    return ForwardResult(sequence[-1], sequence, h0, c0, Saved(x, spec) if training else None)


def backward(saved: Saved, d_last, d_sequence, d_h, d_c) -> Gradients:
    x, U = saved.x, saved.spec.units
    xp = array_module(x)
    zeros = (lambda *shape: xp.zeros(shape, x.dtype))  # noqa: E731
    return Gradients(zeros(*x.shape), zeros(0, U), zeros(0, U), zeros(x.shape[2], 4 * U),
                     zeros(U, 4 * U), zeros(4 * U) if saved.spec.use_bias else None)
