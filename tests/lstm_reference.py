"""The package's NumPy reference path with a plain-array interface, for the path tests.

Time-major, processing order, tanh/sigmoid, gates i, f, c, o (Keras layout). It is
`lstm_gpu.paths.numpy_ref` (the spec) called with loose arrays, plus `FrontAlignedCore`, a
NumPy stand-in for cuDNN that lets the cuDNN glue be checked on the CPU.
"""
from __future__ import annotations

import numpy as np

from lstm_gpu import activations
from lstm_gpu.paths import numpy_ref
from lstm_gpu.paths.base import CellSpec, Weights


def _spec(units, zero_output_for_mask):
    return CellSpec(units, activations.get("tanh"), activations.get("sigmoid"), True,
                    bool(zero_output_for_mask), 2)


def forward(x, mask, h0, c0, kernel, recurrent_kernel, bias, zero_output_for_mask=False):
    """Returns (last, sequence, h, c, cache). x (T, B, F), mask (T, B) bool or None."""
    mask = None if mask is None else np.asarray(mask, bool)
    spec = _spec(h0.shape[1], zero_output_for_mask)
    r = numpy_ref.forward(Weights(kernel, recurrent_kernel, bias), x, mask, h0, c0, spec,
                          None, True)
    return r.last, r.sequence, r.h, r.c, r.saved


def backward(cache, d_last=None, d_sequence=None, d_h=None, d_c=None):
    """Returns dict inputs, h0, c0, kernel, recurrent_kernel, bias."""
    g = numpy_ref.backward(cache, d_last, d_sequence, d_h, d_c)
    return dict(inputs=g.inputs, h0=g.h0, c0=g.c0, kernel=g.kernel,
                recurrent_kernel=g.recurrent_kernel, bias=g.bias)


class FrontAlignedCore:
    """A NumPy stand-in for cuDNN: front-aligned batches, per-sample lengths >= 1.

    Like cuDNN: outputs past a sample's length are zero (paddingFill 0), hy/cy are the states
    at each sample's last valid step, backward ignores dy past the length.
    """

    def __init__(self):
        self.calls = []

    def forward(self, weights, x, lengths, h0, c0, training):
        assert np.all(lengths >= 1), "cuDNN must never see a zero length"
        steps = x.shape[0]
        mask = np.arange(steps)[:, None] < np.asarray(lengths)[None, :]
        _, seq, h, c, cache = forward(x, mask, h0, c0, weights.kernel,
                                      weights.recurrent_kernel, weights.bias, True)
        self.calls.append(("forward", np.array(lengths)))
        return seq, h, c, (cache, mask)

    def backward(self, token, dy, dhy, dcy):
        cache, mask = token
        dy = np.where(mask[:, :, None], dy, 0.0)
        g = backward(cache, None, dy, dhy, dcy)
        # what cuDNN leaves at padded steps is unspecified: poison it
        dx = np.where(mask[:, :, None], g["inputs"], np.nan)
        return dx, g["h0"], g["c0"], g["kernel"], g["recurrent_kernel"], g["bias"]
