"""Keras 3's own LSTM tests (keras/src/layers/rnn/lstm_test.py, v3.15.1), rebuilt on our layer.

The expected numbers are Keras's hard-coded ones (kernel 0.01, recurrent kernel 0.02,
bias 0.03 constants), so these tests need no Keras at run time. Each case runs twice:
with the weights set explicitly (the forget block of the bias is 1.0 under
unit_forget_bias, replacing the constant) and with constant initializers, which also pins
the unit_forget_bias build rule. Keras's tolerance: atol = rtol = 1e-5.
"""
from __future__ import annotations

import numpy as np
import pytest

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path (pytest's rootdir insertion)
    import lstm_testlib as T_

pytestmark = pytest.mark.usefixtures("cpu_path")

TOL = dict(atol=1e-5, rtol=1e-5)
K, R, BIAS = 0.01, 0.02, 0.03


def _constant(value):
    try:
        from lstm_gpu.initializers import Constant
    except ImportError:  # a Keras-style config dict is accepted as an identifier too
        return {"class_name": "Constant", "config": {"value": value}}
    return Constant(value)


def _layer(units, input_shape, how, dtype="float32", unit_forget_bias=True, use_bias=True,
           **kwargs):
    if how == "initializers":
        layer = T_.make_ours(units, dtype, kernel_initializer=_constant(K),
                             recurrent_initializer=_constant(R),
                             bias_initializer=_constant(BIAS),
                             unit_forget_bias=unit_forget_bias, use_bias=use_bias, **kwargs)
        layer.build(input_shape)
        return layer
    features = input_shape[-1]
    weights = [np.full((features, 4 * units), K), np.full((units, 4 * units), R)]
    if use_bias:
        bias = np.full((4 * units,), BIAS)
        if unit_forget_bias:
            bias[units: 2 * units] = 1.0
        weights.append(bias)
    layer = T_.make_ours(units, dtype, unit_forget_bias=unit_forget_bias, use_bias=use_bias,
                         **kwargs)
    return T_.built(layer, input_shape, [w.astype(dtype) for w in weights])


HOW = ["set_weights", "initializers"]
DTYPES = ["float32", "float64"]


def _rows(*values, units):
    return np.array([[v] * units for v in values])


CORRECTNESS = {
    "default": ({}, (0.6288687, 0.86899155, 0.9460773)),
    "go_backwards": ({"go_backwards": True}, (0.35622165, 0.74789524, 0.8872726)),
    "unroll": ({"unroll": True}, (0.6288687, 0.86899155, 0.9460773)),
    "no_unit_forget_bias": ({"unit_forget_bias": False}, (0.57019705, 0.8661914, 0.9459622)),
    "no_bias": ({"use_bias": False}, (0.54986924, 0.86226785, 0.9443936)),
}


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("implementation", [1, 2])
@pytest.mark.parametrize("case", list(CORRECTNESS))
def test_correctness(case, implementation, dtype, how):
    kwargs, expected = CORRECTNESS[case]
    sequence = np.arange(72).reshape((3, 6, 4)).astype(dtype)
    layer = _layer(3, sequence.shape, how, dtype, implementation=implementation, **kwargs)
    np.testing.assert_allclose(layer(sequence), _rows(*expected, units=3), **TOL)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("dtype", DTYPES)
def test_statefulness(dtype, how):
    sequence = np.arange(24).reshape((2, 3, 4)).astype(dtype)
    layer = _layer(4, sequence.shape, how, dtype, stateful=True)
    expected = _rows(0.3124785, 0.6863672, units=4)
    layer(sequence)
    np.testing.assert_allclose(layer(sequence), expected, **TOL)
    layer.reset_state()
    layer(sequence)
    np.testing.assert_allclose(layer(sequence), expected, **TOL)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("go_backwards,expected", [
    (False, [[0.20574439, 0.3558822], [0.64930826, 0.66276]]),
    (True, [[0.13281618, 0.2790356], [0.5839337, 0.5992567]]),
])
def test_pass_initial_state(go_backwards, expected, dtype, how):
    sequence = np.arange(24).reshape((2, 4, 3)).astype(dtype)
    initial_state = [np.arange(4).reshape((2, 2)).astype(dtype),
                     np.arange(4).reshape((2, 2)).astype(dtype)]
    layer = _layer(2, sequence.shape, how, dtype, go_backwards=go_backwards)
    output = layer(sequence, initial_state=initial_state)
    np.testing.assert_allclose(output, np.array(expected), **TOL)


MASK = np.array([[True, True, True, False], [True, True, False, False]])
SEQ0 = [0.01588910, 0.05552048, 0.11755939, 0.11755939]
SEQ1 = [0.14185596, 0.28556206, 0.28556206, 0.28556206]


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("unroll", [True, False])
def test_masking_last_output(unroll, dtype, how):
    sequence = np.arange(24).reshape((2, 4, 3)).astype(dtype)
    layer = _layer(2, sequence.shape, how, dtype, unroll=unroll)
    np.testing.assert_allclose(layer(sequence, mask=MASK),
                               _rows(0.11755939, 0.28556206, units=2), **TOL)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("unroll", [False, True])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_masking_sequences(zero_output_for_mask, unroll, dtype, how):
    sequence = np.arange(24).reshape((2, 4, 3)).astype(dtype)
    layer = _layer(2, sequence.shape, how, dtype, return_sequences=True, unroll=unroll,
                   zero_output_for_mask=zero_output_for_mask)
    output = layer(sequence, mask=MASK)
    expected = np.array([_rows(*SEQ0, units=2), _rows(*SEQ1, units=2)])
    if zero_output_for_mask:
        expected[~MASK] = 0.0
    np.testing.assert_allclose(output, expected, **TOL)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("dtype", DTYPES)
def test_masking_go_backwards(dtype, how):
    sequence = np.arange(24).reshape((2, 4, 3)).astype(dtype)
    backwards_mask = np.array([[False, True, True, True], [False, False, True, True]])
    layer = _layer(2, sequence.shape, how, dtype, go_backwards=True)
    np.testing.assert_allclose(layer(sequence, mask=backwards_mask),
                               _rows(0.15341201, 0.3844719, units=2), **TOL)


# ---------------------------------------------------------------- test_basics (shapes, counts)
@pytest.mark.parametrize("init_kwargs,expected_shape,expected_losses", [
    ({"units": 3, "dropout": 0.5}, (3, 3), 0),
    ({"units": 3, "dropout": 0.5, "recurrent_dropout": 0.5}, (3, 3), 0),
    ({"units": 3, "return_sequences": True, "bias_regularizer": "l1",
      "kernel_regularizer": "l2", "recurrent_regularizer": "l2"}, (3, 2, 3), 3),
])
def test_basics(init_kwargs, expected_shape, expected_losses):
    from lstm_gpu import LSTM

    layer = LSTM(**init_kwargs)
    x = T_.random_inputs(3, 2, 4, dtype="float32")
    out = layer(x, training=True)
    assert out.shape == expected_shape
    assert out.dtype == np.float32
    assert len(layer.get_weights()) == 3
    assert len(layer.losses) == expected_losses
