"""A small, self-contained NumPy LSTM with Keras's masked-step rules, forward and backward.

Test-only. Time-major, processing order, tanh/sigmoid, gates i, f, c, o (Keras layout):
the oracle the cuDNN glue is checked against on CPU, and the GPU parity tests' fallback
reference when the package's own NumPy path is not there. Backward is checked by finite
differences in tests/test_masks.py.
"""
from __future__ import annotations

import numpy as np


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def forward(x, mask, h0, c0, kernel, recurrent_kernel, bias, zero_output_for_mask=False):
    """Returns (last, sequence, h, c, cache). x (T, B, F), mask (T, B) bool or None."""
    steps, batch, _ = x.shape
    units = h0.shape[1]
    m_all = np.ones((steps, batch), bool) if mask is None else np.asarray(mask, bool)
    h, c, prev = h0, c0, np.zeros_like(h0)
    outs, cache = [], []
    for t in range(steps):
        z = x[t] @ kernel + h @ recurrent_kernel + bias
        i = _sigmoid(z[:, :units])
        f = _sigmoid(z[:, units:2 * units])
        g = np.tanh(z[:, 2 * units:3 * units])
        o = _sigmoid(z[:, 3 * units:])
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        m = m_all[t][:, None]
        out = np.where(m, h_new, 0.0 if zero_output_for_mask else prev)
        cache.append((h, c, i, f, g, o, c_new, m))
        h, c, prev = np.where(m, h_new, h), np.where(m, c_new, c), out
        outs.append(out)
    seq = np.stack(outs)
    return seq[-1], seq, h, c, (x, kernel, recurrent_kernel, cache, zero_output_for_mask)


def backward(cache, d_last=None, d_sequence=None, d_h=None, d_c=None):
    """Returns dict inputs, h0, c0, kernel, recurrent_kernel, bias."""
    x, kernel, rk, steps_cache, zofm = cache
    steps, batch, _ = x.shape
    units = rk.shape[0]
    d_seq = np.zeros((steps, batch, units)) if d_sequence is None else d_sequence.copy()
    if d_last is not None:
        d_seq[-1] = d_seq[-1] + d_last
    dh = np.zeros((batch, units)) if d_h is None else d_h.copy()
    dc = np.zeros((batch, units)) if d_c is None else d_c.copy()
    d_prev = np.zeros((batch, units))
    dx = np.zeros_like(x)
    dk, drk, db = np.zeros_like(kernel), np.zeros_like(rk), np.zeros(4 * units)
    for t in reversed(range(steps)):
        h_prev, c_prev, i, f, g, o, c_new, m = steps_cache[t]
        d_out = d_seq[t] + d_prev
        dh_new = np.where(m, d_out + dh, 0.0)
        dc_new = np.where(m, dc, 0.0)
        d_prev = np.zeros_like(d_out) if zofm else np.where(m, 0.0, d_out)
        tc = np.tanh(c_new)
        do = dh_new * tc
        dct = dc_new + dh_new * o * (1 - tc * tc)
        dz = np.concatenate([dct * g * i * (1 - i), dct * c_prev * f * (1 - f),
                             dct * i * (1 - g * g), do * o * (1 - o)], axis=1)
        dx[t] = dz @ kernel.T
        dk += x[t].T @ dz
        drk += h_prev.T @ dz
        db += dz.sum(axis=0)
        dh = dz @ rk.T + np.where(m, 0.0, dh)
        dc = dct * f + np.where(m, 0.0, dc)
    # d_prev left over is the gradient of the zeros before the first output: dropped.
    return dict(inputs=dx, h0=dh, c0=dc, kernel=dk, recurrent_kernel=drk, bias=db)


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
