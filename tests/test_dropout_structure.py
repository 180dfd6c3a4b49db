"""Dropout and recurrent dropout, tested structurally (Keras's masks are backend RNG streams
that no implementation reproduces bit for bit).

Probe weights make the layer print its masks: with linear activations, i = o = 1 (bias 1,
zero kernels), f = 0 (bias 0), the candidate block an identity, we get c_t = z_c and
h_t = c_t, so
  - input dropout, x = 1, recurrent kernel 0: output[:, t] = input mask of the c gate;
  - recurrent dropout, x = 0, h0 = 1, kernel 0, candidate recurrent block = I:
    h_t = m * h_{t-1}, i.e. output[:, t] = m ** (t + 1) when the mask m is constant in time.
"""
from __future__ import annotations

import numpy as np
import pytest

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path (pytest's rootdir insertion)
    import lstm_testlib as T_

pytestmark = pytest.mark.usefixtures("cpu_path")

B, T, N = 1000, 4, 8  # batch, steps, features == units


def _probe_weights(*, input_gate_from_x=False, candidate_from="x"):
    kernel = np.zeros((N, 4 * N))
    recurrent = np.zeros((N, 4 * N))
    bias = np.zeros(4 * N)
    bias[0:N] = 1.0            # i = 1
    bias[3 * N:] = 1.0         # o = 1 ; f = 0
    eye = np.eye(N)
    if candidate_from == "x":
        kernel[:, 2 * N:3 * N] = eye
    else:
        recurrent[:, 2 * N:3 * N] = eye
    if input_gate_from_x:      # i = x * mask_i (no bias) -> c_1 = (x m_i) * (x m_c)
        kernel[:, 0:N] = eye
        bias[0:N] = 0.0
    return [kernel, recurrent, bias]


def _layer(weights, dtype="float64", **kwargs):
    layer = T_.make_ours(N, dtype, activation="linear", recurrent_activation="linear",
                         return_sequences=True, **kwargs)
    return T_.built(layer, (B, T, N), weights)


def _input_masks(layer, training=True):
    return T_.to_numpy(layer(np.ones((B, T, N)), training=training))


def _recurrent_outputs(layer, training=True):
    h0 = [np.ones((B, N)), np.zeros((B, N))]
    return T_.to_numpy(layer(np.zeros((B, T, N)), initial_state=h0, training=training))


def _check_mask_values(m, rate):
    scale = 1.0 / (1.0 - rate)
    kept = m != 0
    np.testing.assert_allclose(m[kept], scale, rtol=1e-12)
    assert abs((~kept).mean() - rate) < 0.02, (~kept).mean()


@pytest.mark.parametrize("implementation", [1, 2])
@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_input_dropout_mask(rate, implementation):
    out = _input_masks(_layer(_probe_weights(), dropout=rate, seed=3,
                              implementation=implementation))
    for t in range(1, T):  # constant over time
        np.testing.assert_array_equal(out[:, t], out[:, 0])
    _check_mask_values(out[:, 0], rate)


def test_input_dropout_four_independent_masks_with_implementation_1():
    """implementation 1: one input mask per gate (i, f, c, o); i and c masks independent, so
    c_1 = m_i * m_c is zero with probability 1 - (1 - rate)**2."""
    rate = 0.3
    out = _input_masks(_layer(_probe_weights(input_gate_from_x=True), dropout=rate,
                              seed=5, implementation=1))
    zero = (out[:, 0] == 0).mean()
    assert abs(zero - (1 - (1 - rate) ** 2)) < 0.02, zero
    np.testing.assert_allclose(np.unique(out[:, 0]), [0.0, 1 / (1 - rate) ** 2], rtol=1e-12)


def test_input_dropout_one_mask_with_implementation_2():
    """implementation 2: one input mask shared by the four gates: c_1 = m * m."""
    rate = 0.3
    out = _input_masks(_layer(_probe_weights(input_gate_from_x=True), dropout=rate,
                              seed=5, implementation=2))
    zero = (out[:, 0] == 0).mean()
    assert abs(zero - rate) < 0.02, zero


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_recurrent_dropout_mask_constant_over_time(rate):
    out = _recurrent_outputs(_layer(_probe_weights(candidate_from="h"),
                                    recurrent_dropout=rate, seed=7))
    m = out[:, 0]
    _check_mask_values(m, rate)
    for t in range(1, T):
        np.testing.assert_allclose(out[:, t], m ** (t + 1), rtol=1e-12)


@pytest.mark.parametrize("kwargs", [{"dropout": 0.4}, {"recurrent_dropout": 0.4},
                                    {"dropout": 0.3, "recurrent_dropout": 0.3}])
@pytest.mark.parametrize("training", [False, None])
def test_inference_identical_to_no_dropout(kwargs, training):
    w = T_.random_weights(N, N)
    x = T_.random_inputs(8, T, N)
    mask = T_.make_mask("mixed", 8, T)
    ref = T_.built(T_.make_ours(N, return_sequences=True, return_state=True), (8, T, N), w)
    drop = T_.built(T_.make_ours(N, return_sequences=True, return_state=True, seed=1,
                                 **kwargs), (8, T, N), w)
    T_.assert_outputs_close(T_.call(drop, x, mask, training=training), T_.call(ref, x, mask),
                            rtol=1e-14)


@pytest.mark.parametrize("kwargs", [{"dropout": 0.4}, {"recurrent_dropout": 0.4},
                                    {"dropout": 0.3, "recurrent_dropout": 0.3,
                                     "implementation": 1}])
def test_same_seed_reproducible_new_masks_each_call(kwargs):
    w = T_.random_weights(N, N)
    x = T_.random_inputs(16, T, N)

    def fresh(seed):
        return T_.built(T_.make_ours(N, return_sequences=True, seed=seed, **kwargs),
                        (16, T, N), w)

    a, b, c = fresh(11), fresh(11), fresh(12)
    a1, b1, c1 = (T_.to_numpy(layer(x, training=True)) for layer in (a, b, c))
    np.testing.assert_array_equal(a1, b1)
    assert not np.allclose(a1, c1), "different seeds gave the same masks"
    a2, b2 = T_.to_numpy(a(x, training=True)), T_.to_numpy(b(x, training=True))
    np.testing.assert_array_equal(a2, b2)
    assert not np.allclose(a1, a2), "a seeded layer must draw new masks on every call (Keras)"


def test_training_true_actually_drops():
    w = T_.random_weights(N, N)
    x = T_.random_inputs(16, T, N)
    layer = T_.built(T_.make_ours(N, dropout=0.5, seed=2), (16, T, N), w)
    assert not np.allclose(T_.to_numpy(layer(x, training=True)),
                           T_.to_numpy(layer(x, training=False)))


@pytest.mark.parametrize("argument", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_rate_outside_range_raises(argument, rate):
    from lstm_gpu import LSTM

    with pytest.raises(ValueError, match=argument):
        LSTM(4, **{argument: rate})


def test_zero_rate_with_training_is_exact():
    w = T_.random_weights(N, N)
    x = T_.random_inputs(8, T, N)
    ref = T_.built(T_.make_ours(N, return_sequences=True), (8, T, N), w)
    zero = T_.built(T_.make_ours(N, return_sequences=True, dropout=0.0, recurrent_dropout=0.0,
                                 seed=1), (8, T, N), w)
    np.testing.assert_array_equal(zero(x, training=True), ref(x))
