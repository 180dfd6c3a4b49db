"""Property: each CPU path (NumPy reference and native core) agrees with an independent float64
reference on random shapes (the empty batch included), masks, flags and activations, forward
and backward.

The reference below is Keras 3's LSTM written per sample and per step in float64, sharing
nothing with the layer but the activation functions (pinned to Keras by their own tests).
Gradients are checked as directional derivatives: <backward's gradient, v> against a
central difference of the reference's loss along a random direction v, for the inputs, the
initial states and each weight. Derandomized with a fixed example budget, so CI runs the
same cases every time, in well under a minute.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path
    import lstm_testlib as T_

from lstm_gpu import LSTM, activations

SMOOTH = ("tanh", "sigmoid", "softsign", "silu", "gelu", "elu", "mish", "log_sigmoid")
EPS = 1e-6


def reference(x, kernel, recurrent, bias, mask, h0, c0, act, rec_act, go_backwards,
              zero_output):
    """Batch-major x (B, T, F), mask (B, T) or None. Returns the output sequence (B, T, U)
    in processing order and the final h, c."""
    B, T, _ = x.shape
    U = recurrent.shape[0]
    sequence = np.zeros((B, T, U))
    h_last, c_last = h0.copy(), c0.copy()
    for b in range(B):
        h, c, out = h0[b], c0[b], np.zeros(U)
        for k, t in enumerate(range(T - 1, -1, -1) if go_backwards else range(T)):
            z = x[b, t] @ kernel + h @ recurrent + (0.0 if bias is None else bias)
            i, f, o = rec_act(z[:U]), rec_act(z[U:2 * U]), rec_act(z[3 * U:])
            c_new = f * c + i * act(z[2 * U:3 * U])
            h_new = o * act(c_new)
            if mask is None or mask[b, t]:
                h, c, out = h_new, c_new, h_new
            elif zero_output:
                out = np.zeros(U)
            sequence[b, k] = out
        h_last[b], c_last[b] = h, c
    return sequence, h_last, c_last


@st.composite
def cases(draw):
    case = dict(
        B=draw(st.integers(0, 3)), T=draw(st.integers(1, 5)), F=draw(st.integers(1, 3)),
        U=draw(st.integers(1, 3)), seed=draw(st.integers(0, 2 ** 16)),
        mask=draw(st.sampled_from(["none", "random"])),
        init=draw(st.booleans()), act=draw(st.sampled_from(SMOOTH)),
        rec_act=draw(st.sampled_from(SMOOTH)), dtype=draw(st.sampled_from(["float64",
                                                                           "float32"])),
        stateful=draw(st.booleans()),
    )
    case["flags"] = dict(
        go_backwards=draw(st.booleans()), time_major=draw(st.booleans()),
        return_sequences=draw(st.booleans()), return_state=draw(st.booleans()),
        zero_output_for_mask=draw(st.booleans()), use_bias=draw(st.booleans()),
        implementation=draw(st.sampled_from([1, 2])))
    return case


def _data(case):
    rng = np.random.default_rng(case["seed"])
    B, T, F, U = case["B"], case["T"], case["F"], case["U"]
    weights = [0.6 * rng.standard_normal((F, 4 * U)), 0.6 * rng.standard_normal((U, 4 * U))]
    if case["flags"]["use_bias"]:
        weights.append(0.6 * rng.standard_normal(4 * U))
    x = rng.standard_normal((B, T, F))
    mask = rng.random((B, T)) < 0.6 if case["mask"] == "random" else None
    states = [0.5 * rng.standard_normal((B, U)) for _ in range(2)] if case["init"] else None
    return rng, weights, x, mask, states


def _as_dtype(arrays, dtype):
    """Rounded to the layer's dtype, back in float64: the reference sees the same numbers."""
    return [None if a is None else a.astype(dtype).astype(np.float64) for a in arrays]


def _layer_outputs(layer, x, mask, states, flags, training):
    tm = flags["time_major"]
    kwargs = {"training": training}
    if mask is not None:
        kwargs["mask"] = mask.T if tm else mask
    if states is not None:
        kwargs["initial_state"] = states
    out = layer(x.transpose(1, 0, 2) if tm else x, **kwargs)
    out = list(out) if flags["return_state"] else [out]
    if flags["return_sequences"] and tm:
        out[0] = out[0].transpose(1, 0, 2)
    return out


def _reference_outputs(case, weights, x, mask, states):
    flags = case["flags"]
    B, U = x.shape[0], case["U"]
    h0, c0 = states if states is not None else (np.zeros((B, U)), np.zeros((B, U)))
    kernel, recurrent = weights[:2]
    bias = weights[2] if flags["use_bias"] else None
    sequence, h, c = reference(x, kernel, recurrent, bias, mask, h0, c0,
                               activations.get(case["act"]), activations.get(case["rec_act"]),
                               flags["go_backwards"], flags["zero_output_for_mask"])
    out = [sequence if flags["return_sequences"] else sequence[:, -1]]
    return out + [h, c] if flags["return_state"] else out


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=cases())
def test_cpu_paths_match_the_float64_reference(cpu_path, case):
    """On each CPU path (the `cpu_path` fixture sets it once for all examples)."""
    flags, dtype = case["flags"], case["dtype"]
    rng, weights, x, mask, states = _data(case)
    weights, x = _as_dtype(weights, dtype), _as_dtype([x], dtype)[0]
    states = None if states is None else _as_dtype(states, dtype)
    layer = LSTM(case["U"], activation=case["act"], recurrent_activation=case["rec_act"],
                 dtype=dtype, stateful=case["stateful"], **flags)
    layer.build((x.shape[1], x.shape[0], x.shape[2]) if flags["time_major"] else x.shape)
    layer.set_weights(weights)
    rtol = 1e-10 if dtype == "float64" else 3e-5

    calls = 2 if case["stateful"] else 1
    for call in range(calls):
        xd = x.astype(dtype)
        sd = None if states is None else [s.astype(dtype) for s in states]
        got = _layer_outputs(layer, xd, mask, sd, flags, training=True)
        want = _reference_outputs(case, weights, x, mask, states)
        assert layer.last_path == ("empty-batch" if case["B"] == 0 else T_.expected_cpu_path())
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == np.dtype(dtype)
            np.testing.assert_allclose(g.astype(np.float64), w, rtol=rtol, atol=rtol)
        if case["stateful"] and states is None:  # the next call starts from these states
            states = [np.asarray(s, np.float64) for s in layer.states]
            case = dict(case, init=True)
    if dtype == "float64":
        _check_gradients(layer, case, rng, weights, x, mask, states, got)


def _check_gradients(layer, case, rng, weights, x, mask, states, outputs):
    """Directional derivatives of L = sum(outputs * upstream) for the last call."""
    flags = case["flags"]
    upstream = [rng.standard_normal(o.shape) for o in outputs]
    d_out = [u.transpose(1, 0, 2) if (k == 0 and flags["time_major"]
                                      and flags["return_sequences"]) else u
             for k, u in enumerate(upstream)]
    grads = layer.backward(tuple(d_out) if flags["return_state"] else d_out[0])
    B, U = x.shape[0], case["U"]
    states = states if states is not None else [np.zeros((B, U)), np.zeros((B, U))]

    def loss(w, xx, ss):
        outs = _reference_outputs(dict(case, init=True), w, xx, mask, ss)
        return sum(float((o * u).sum()) for o, u in zip(outs, upstream))

    dx = grads["inputs"].transpose(1, 0, 2) if flags["time_major"] else grads["inputs"]
    checks = [("inputs", x, dx, lambda a: loss(weights, a, states))]
    for k in range(2):
        checks.append((f"initial_state[{k}]", states[k], grads["initial_state"][k],
                       lambda a, k=k: loss(weights, x, states[:k] + [a] + states[k + 1:])))
    for k, name in enumerate(["kernel", "recurrent_kernel", "bias"][:len(weights)]):
        checks.append((name, weights[k], grads[name],
                       lambda a, k=k: loss(weights[:k] + [a] + weights[k + 1:], x, states)))
    for name, value, grad, f in checks:
        v = rng.standard_normal(value.shape)
        numeric = (f(value + EPS * v) - f(value - EPS * v)) / (2 * EPS)
        analytic = float((np.asarray(grad, np.float64) * v).sum())
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-6), (name, case)
