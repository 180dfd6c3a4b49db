"""Arguments the fuzzing campaign found loose: each raises ValueError/TypeError naming the
argument and the value it got (never AttributeError, a NumPy message, or a silent default),
and leaves the layer working."""
from __future__ import annotations

import numpy as np
import pytest

from lstm_gpu import LSTM
from lstm_gpu.optimizers import SGD, Adam

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path
    import lstm_testlib as T_

B, T, F, U = 2, 3, 4, 2
ERRORS = (ValueError, TypeError)


def _raises(words, fn, *args, **kwargs):
    with pytest.raises(ERRORS) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    for w in words:
        assert w in message, f"{w!r} not in: {message}"


def _layer(**kwargs):
    return T_.built(LSTM(U, dtype="float64", **kwargs), (B, T, F), T_.random_weights(F, U))


@pytest.mark.parametrize("dtype", [{}, {"config": {}}, {"class_name": "DTypePolicy"},
                                   {"config": {"name": None}}, {"config": {"name": 3}},
                                   {"config": {"name": "no_such_type"}}, {"name": "int32"},
                                   "complex64", 3.5])
def test_dtype_garbage_is_rejected(dtype):
    from lstm_gpu import LSTM

    config = dict(LSTM(U).get_config(), dtype=dtype)
    _raises(["dtype", repr(dtype)[:10]], LSTM.from_config, config)


@pytest.mark.parametrize("dtype", [{"config": {"name": "float64"}}, {"name": "float16"},
                                   "float32", np.float64])
def test_dtype_forms_keras_writes_are_accepted(dtype):
    assert LSTM(U, dtype=dtype).dtype.kind == "f"


@pytest.mark.parametrize("shape", [(2, 4, 2.5), (2, 4, -1), (2, 4, 0), "abc", None, (2, 4),
                                   (2.0, 4, 2), (-1, 4, 2), (2, 4, None), (True, 4, 2), 7])
def test_build_rejects_bad_input_shapes(shape):
    layer = LSTM(U)
    _raises(["input_shape", repr(shape)[:6]], layer.build, shape)
    assert not layer.built


@pytest.mark.parametrize("shape", [(None, None, 2), [3, 4, 2], (np.int64(3), None, 2)])
def test_build_accepts_unknown_batch_and_steps(shape):
    layer = LSTM(U)
    layer.build(shape)
    assert layer.get_weights()[0].shape == (2, 4 * U)


def test_assign_weight_checks_name_and_value():
    layer = _layer()
    layer.assign_weight("bias", [0.5] * (4 * U))  # a list is an array-like: fine
    np.testing.assert_array_equal(layer.bias, 0.5)
    _raises(["value", "dtype"], layer.assign_weight, "bias", ["a"] * (4 * U))
    _raises(["shape"], layer.assign_weight, "bias", [1.0, 2.0])
    _raises(["value"], layer.assign_weight, "bias", np.ones(4 * U, complex))
    _raises(["weight", "'nope'"], layer.assign_weight, "nope", np.ones(3))
    _raises(["weight"], layer.assign_weight, 0, np.ones(3))
    layer(T_.random_inputs(B, T, F))


@pytest.mark.parametrize("bad", [["a", "b"], np.full((B, U), "x"), np.ones((B, U), complex)])
def test_reset_states_rejects_non_real_values(bad):
    layer = _layer(stateful=True)
    layer(T_.random_inputs(B, T, F))
    states = [np.array(s) for s in layer.states]
    value = bad if isinstance(bad, list) else [bad, bad]
    _raises(["states[0]"], layer.reset_states, value)
    for a, b in zip(layer.states, states):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("training", [np.array([True, False]), "yes", 2, np.array(["a"]),
                                      1.5, [True]])
def test_training_flag_must_be_a_boolean(training):
    layer = _layer()
    _raises(["training"], layer, T_.random_inputs(B, T, F), training=training)


@pytest.mark.parametrize("training", [True, np.bool_(True), 1, np.array(True), np.array([1])])
def test_training_flag_forms_that_mean_true(training):
    layer = _layer()
    layer(T_.random_inputs(B, T, F), training=training)
    layer.backward(np.ones((B, U)))


@pytest.mark.parametrize("mask", ["x", np.ones(3), np.ones((2, 3, 2)), np.full((2, 3), "a")])
def test_cudnn_ineligibility_checks_the_mask(mask):
    _raises(["mask"], _layer().cudnn_ineligibility, mask=mask)


def test_cudnn_ineligibility_checks_training():
    layer = _layer()
    _raises(["training"], layer.cudnn_ineligibility, training="yes")
    assert isinstance(layer.cudnn_ineligibility(mask=np.ones((B, T), bool), training=1), list)


# ------------------------------------------------------------------ optimizers
@pytest.mark.parametrize("make,words", [
    (lambda: SGD(momentum="a"), ["momentum", "'a'"]),
    (lambda: SGD(momentum=1.5), ["momentum"]),
    (lambda: Adam(learning_rate=float("nan")), ["learning_rate", "nan"]),
    (lambda: Adam(learning_rate="0.1"), ["learning_rate"]),
    (lambda: Adam(clipnorm=-1), ["clipnorm", "-1"]),
    (lambda: Adam(clipvalue=0), ["clipvalue"]),
    (lambda: Adam(global_clipnorm=float("inf")), ["global_clipnorm"]),
    (lambda: Adam(weight_decay=-0.1), ["weight_decay"]),
    (lambda: Adam(beta_1=1.0), ["beta_1"]),
    (lambda: Adam(beta_2=None), ["beta_2"]),
    (lambda: Adam(epsilon=-1e-7), ["epsilon"]),
])
def test_optimizer_hyperparameters(make, words):
    _raises(words, make)


def test_apply_needs_a_dict_of_gradients():
    layer = _layer()
    layer(T_.random_inputs(B, T, F), training=True)
    grads = layer.backward(np.ones((B, U)))
    _raises(["grads", "list"], Adam().apply, layer, list(grads.values()))
    as_lists = {k: (v.tolist() if k == "bias" else v) for k, v in grads.items()}
    a, b = _layer(), _layer()
    Adam().apply(a, grads)
    Adam().apply(b, as_lists)  # list-valued gradients are array-likes
    np.testing.assert_array_equal(a.bias, b.bias)
    _raises(["grads['bias']", "dtype"], Adam().apply, layer, dict(grads, bias=["x"] * 8))


def test_apply_to_a_dict_of_non_arrays():
    _raises(["target['w']"], SGD().apply, {"w": [1.0, 2.0]}, {"w": np.ones(2)})


# ------------------------------------------------------------------ callable activations
@pytest.mark.parametrize("returns", [
    lambda x: float(np.tanh(x).sum()),       # a scalar
    lambda x: np.tanh(x).tolist(),           # a list
    lambda x: np.tanh(x)[..., :1],           # broadcastable, wrong shape
    lambda x: np.tanh(x)[None],              # an extra axis
    lambda x: np.tanh(x).astype(complex),    # complex
])
@pytest.mark.parametrize("argument", ["activation", "recurrent_activation"])
def test_callable_activation_must_return_an_array_of_its_input_shape(returns, argument):
    layer = _layer(**{argument: returns})
    before = layer.get_weights()
    _raises([argument, "shape"], layer, T_.random_inputs(B, T, F))
    for a, b in zip(layer.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_callable_derivative_is_checked_too():
    def act(x):
        return np.tanh(x)

    act.derivative = lambda x, y: 1.0  # a scalar
    layer = _layer(activation=act)
    layer(T_.random_inputs(B, T, F), training=True)
    _raises(["activation.derivative"], layer.backward, np.ones((B, U)))


def test_callable_activation_in_another_dtype_is_cast():
    layer = _layer(activation=lambda x: np.tanh(x).astype(np.float32))
    out = layer(T_.random_inputs(B, T, F))
    assert out.dtype == np.float64
