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


def random_problem(seed, steps=5, batch=4, features=3, units=2):
    """(x (T, B, F), h0, c0, Weights) drawn from `seed`, float64, weights scaled by 0.5."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps, batch, features))
    h0, c0 = rng.normal(size=(batch, units)) * 0.5, rng.normal(size=(batch, units)) * 0.5
    w = Weights(rng.normal(size=(features, 4 * units)) * 0.5,
                rng.normal(size=(units, 4 * units)) * 0.5, rng.normal(size=4 * units) * 0.5)
    return x, h0, c0, w


class FrontAlignedCore:
    """A NumPy stand-in for cuDNN: front-aligned batches, per-sample lengths >= 1.

    Like cuDNN (the `cudnn_runtime.CudnnCore` interface): weights come as a flat weight space
    laid out by `weight_layout` (canonical, or `layout` given), and gate k computes
    W_k x + R_k h + bW_k + bR_k from it; outputs past a sample's length are zero
    (paddingFill 0), hy/cy are the states at each sample's last valid step, backward ignores
    dy past the length, leaves dx there unspecified (poisoned with NaN here) and returns the
    weight gradient as a flat space (dbW = dbR). Like cuDNN's input GEMM over all T * B rows,
    a NaN anywhere in x reaches the weight gradient (0 * NaN).
    """

    def __init__(self, layout=None):
        self.calls = []
        self.layout = layout

    def weight_layout(self, x, units):
        from lstm_gpu.paths import cudnn_weights as cw

        features = x.shape[2]
        if self.layout is not None:
            return self.layout
        return cw.weight_layout(cw.canonical_layout(features, units),
                                cw.weight_space_elements(features, units), features, units)

    def _keras_weights(self, ws, features, units):
        lay = self.weight_layout(np.empty((0, 0, features)), units).blocks
        kernel = np.empty((features, 4 * units), ws.dtype)
        recurrent = np.empty((units, 4 * units), ws.dtype)
        bias = np.empty(4 * units, ws.dtype)
        for k in range(4):
            cols = slice(k * units, (k + 1) * units)
            for lin, dst in ((k, kernel), (4 + k, recurrent)):
                b = lay[lin]
                dst[:, cols] = ws[b.m_offset:b.m_offset + b.m_shape[0] * b.m_shape[1]].reshape(
                    b.m_shape).T
            bw, br = lay[k], lay[4 + k]
            bias[cols] = ws[bw.b_offset:bw.b_offset + units] + ws[br.b_offset:br.b_offset + units]
        return kernel, recurrent, bias

    def forward(self, ws, x, lengths, h0, c0, training):
        assert np.all(lengths >= 1), "cuDNN must never see a zero length"
        steps, _, features = x.shape
        units = h0.shape[1]
        assert ws.shape == (self.weight_layout(x, units).elements,)
        mask = np.arange(steps)[:, None] < np.asarray(lengths)[None, :]
        kernel, recurrent, bias = self._keras_weights(ws, features, units)
        _, seq, h, c, cache = forward(x, mask, h0, c0, kernel, recurrent, bias, True)
        self.calls.append(("forward", np.array(lengths)))
        return seq, h, c, (cache, mask, features, units)

    def backward(self, token, dy, dhy, dcy):
        cache, mask, features, units = token
        dy = np.where(mask[:, :, None], dy, 0.0)
        g = backward(cache, None, dy, dhy, dcy)
        # what cuDNN leaves at padded steps is unspecified: poison it
        dx = np.where(mask[:, :, None], g["inputs"], np.nan)
        lay = self.weight_layout(np.empty((0, 0, features)), units)
        dws = np.full(lay.elements, np.nan)  # gaps between blocks stay poisoned
        for k in range(4):
            cols = slice(k * units, (k + 1) * units)
            for lin, src in ((k, g["kernel"]), (4 + k, g["recurrent_kernel"])):
                b = lay.blocks[lin]
                size = b.m_shape[0] * b.m_shape[1]
                dws[b.m_offset:b.m_offset + size] = src[:, cols].T.ravel()
                dws[b.b_offset:b.b_offset + units] = g["bias"][cols]
        return dx, g["h0"], g["c0"], dws
