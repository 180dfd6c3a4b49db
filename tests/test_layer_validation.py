"""Bad arguments raise ValueError/TypeError naming the argument, and leave the layer as it was
(weights and stateful states unchanged)."""
from __future__ import annotations

import numpy as np
import pytest

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path (pytest's rootdir insertion)
    import lstm_testlib as T_

pytestmark = pytest.mark.usefixtures("cpu_path")

B, T, F, U = 2, 4, 3, 5
ERRORS = (ValueError, TypeError)


def _stateful_layer(**kwargs):
    layer = T_.built(T_.make_ours(U, "float64", stateful=True, return_state=True, **kwargs),
                     (B, T, F), T_.random_weights(F, U))
    layer(T_.random_inputs(B, T, F))  # non-zero stored states
    return layer


def _snapshot(layer):
    return ([np.array(w, copy=True) for w in layer.get_weights()],
            [np.array(T_.to_numpy(s), copy=True) for s in (layer.states or [])])


def _assert_unchanged(layer, snap):
    weights, states = snap
    for a, b in zip(layer.get_weights(), weights):
        np.testing.assert_array_equal(a, b)
    assert len(layer.get_weights()) == len(weights)
    for a, b in zip(layer.states or [], states):
        np.testing.assert_array_equal(T_.to_numpy(a), b)


def _raises(layer, words, fn):
    """fn() must raise ValueError/TypeError whose message names one of `words`; the layer's
    weights and states must be unchanged; the layer still works afterwards."""
    snap = _snapshot(layer)
    with pytest.raises(ERRORS) as info:
        fn()
    message = str(info.value)
    assert any(w.lower() in message.lower() for w in words), f"{words} not in: {message}"
    _assert_unchanged(layer, snap)


# ---------------------------------------------------------------- call-time errors
@pytest.mark.parametrize("shape", [(B, F), (B, T, F, 1), (F,)])
def test_wrong_input_rank(shape):
    layer = _stateful_layer()
    _raises(layer, ["inputs", "ndim", "rank"], lambda: layer(np.ones(shape)))


@pytest.mark.parametrize("bad", [np.array([[["a"] * F] * T] * B),
                                 np.ones((B, T, F), dtype=object),
                                 np.ones((B, T, F), dtype=complex)])
def test_non_numeric_input(bad):
    layer = _stateful_layer()
    _raises(layer, ["inputs", "dtype"], lambda: layer(bad))


def test_feature_size_differs_from_built():
    layer = _stateful_layer()
    _raises(layer, ["inputs", "feature", str(F)], lambda: layer(np.ones((B, T, F + 1))))


@pytest.mark.parametrize("mask_shape", [(B, T + 1), (B + 1, T), (B, T, 1, 1), (T,), (T, B)])
def test_mask_of_wrong_shape(mask_shape):
    if mask_shape == (T, B) and T == B:
        pytest.skip("ambiguous")
    layer = _stateful_layer()
    mask = np.ones(mask_shape, dtype=bool)
    _raises(layer, ["mask"], lambda: layer(T_.random_inputs(B, T, F), mask=mask))


def test_time_major_mask_must_be_time_major():
    layer = T_.built(T_.make_ours(U, "float64", time_major=True), (T, B, F),
                     T_.random_weights(F, U))
    x = T_.random_inputs(T, B, F)
    _raises(layer, ["mask"], lambda: layer(x, mask=np.ones((B, T), dtype=bool)))
    layer(x, mask=np.ones((T, B), dtype=bool))


@pytest.mark.parametrize("make_state", [
    lambda: np.zeros((B, U)),                                       # one array, not two
    lambda: [np.zeros((B, U))],                                     # one state
    lambda: [np.zeros((B, U))] * 3,                                 # three states
    lambda: [np.zeros((B, U + 1)), np.zeros((B, U))],               # wrong width (h)
    lambda: [np.zeros((B, U)), np.zeros((B, U - 1))],               # wrong width (c)
    lambda: [np.zeros((B + 1, U)), np.zeros((B + 1, U))],           # wrong batch
    lambda: [np.zeros((U,)), np.zeros((U,))],                       # wrong rank
])
def test_initial_state_must_be_two_arrays_of_batch_by_units(make_state):
    layer = _stateful_layer()
    state = make_state()
    _raises(layer, ["initial_state"],
            lambda: layer(T_.random_inputs(B, T, F), initial_state=state))


def test_stateful_batch_size_change():
    layer = _stateful_layer()
    _raises(layer, ["batch"], lambda: layer(T_.random_inputs(B + 1, T, F)))


def test_reset_states_wrong_values():
    layer = _stateful_layer()
    _raises(layer, ["states", "state"], lambda: layer.reset_states([np.zeros((B + 1, U))] * 2))
    _raises(layer, ["states", "state"], lambda: layer.reset_states([np.zeros((B, U))] * 3))


# ---------------------------------------------------------------- constructor errors
@pytest.mark.parametrize("argument", ["activation", "recurrent_activation"])
@pytest.mark.parametrize("name", ["no_such_activation", "softmax"])
def test_unknown_activation(argument, name):
    from lstm_gpu import LSTM

    with pytest.raises(ERRORS, match=argument):
        LSTM(U, **{argument: name})


@pytest.mark.parametrize("argument", ["kernel_initializer", "recurrent_initializer",
                                      "bias_initializer"])
def test_unknown_initializer(argument):
    from lstm_gpu import LSTM

    with pytest.raises(ERRORS, match=argument):
        LSTM(U, **{argument: "no_such_initializer"})


@pytest.mark.parametrize("argument", ["kernel_regularizer", "recurrent_regularizer",
                                      "bias_regularizer", "activity_regularizer",
                                      "kernel_constraint", "recurrent_constraint",
                                      "bias_constraint"])
def test_unknown_regularizer_or_constraint(argument):
    from lstm_gpu import LSTM

    with pytest.raises(ERRORS, match=argument):
        LSTM(U, **{argument: "no_such_thing"})


@pytest.mark.parametrize("units", [0, -3])
def test_units_must_be_positive_int(units):
    from lstm_gpu import LSTM

    with pytest.raises(ERRORS, match="units"):
        LSTM(units)


@pytest.mark.parametrize("value", ["x", "yes", 1.5, None])
def test_invalid_use_cudnn(value):
    from lstm_gpu import LSTM

    with pytest.raises(ValueError, match="use_cudnn"):
        LSTM(U, use_cudnn=value)


# ---------------------------------------------------------------- set_weights
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("which", ["kernel", "recurrent_kernel", "bias", "count", "transposed"])
def test_set_weights_wrong_shapes(which, use_bias):
    if which == "bias" and not use_bias:
        pytest.skip("no bias")
    layer = T_.built(T_.make_ours(U, "float64", use_bias=use_bias), (B, T, F),
                     T_.random_weights(F, U, use_bias=use_bias))
    bad = [np.array(w, copy=True) for w in layer.get_weights()]
    words = ["weight", "shape"]
    if which == "kernel":
        bad[0] = np.zeros((F + 1, 4 * U))
        words.append("kernel")
    elif which == "recurrent_kernel":
        bad[1] = np.zeros((U, 4 * U + 1))
        words.append("recurrent_kernel")
    elif which == "bias":
        bad[2] = np.zeros((4 * U - 1,))
        words.append("bias")
    elif which == "count":
        bad = bad + [np.zeros(3)]
    else:
        bad[0] = np.zeros((4 * U, F))
    _raises(layer, words, lambda: layer.set_weights(bad))


def test_errors_do_not_consume_stateful_states():
    """After any failed call, the next good call continues from the same states."""
    x = T_.random_inputs(B, T, F, seed=9)
    a, b = _stateful_layer(), _stateful_layer()
    for bad in (lambda: a(np.ones((B, T, F + 1))), lambda: a(x, mask=np.ones((B, T + 1))),
                lambda: a(x, initial_state=[np.zeros((B, U))])):
        with pytest.raises(ERRORS):
            bad()
    T_.assert_outputs_close(T_.call(a, x), T_.call(b, x), rtol=0)
