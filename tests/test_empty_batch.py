"""An empty batch (B == 0, a data pipeline's last batch) works in every mode, backward too.

Keras returns empty arrays of the right shapes; so do we, without any compute path seeing
B == 0 (`last_path` is "empty-batch"). Regularizer penalties stay finite (Keras divides the
activity penalty with divide_no_nan); the weight gradients are the regularizers' alone.
T == 0 stays a clear error, as it is in Keras.
"""
from __future__ import annotations

import numpy as np
import pytest

from lstm_gpu import LSTM

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path
    import lstm_testlib as T_

T, F, U = 4, 2, 3

MODES = [
    {},
    {"return_sequences": True},
    {"return_state": True},
    {"return_sequences": True, "return_state": True, "go_backwards": True},
    {"return_sequences": True, "time_major": True},
    {"dropout": 0.5, "recurrent_dropout": 0.5, "seed": 1, "return_sequences": True},
    {"stateful": True, "return_state": True},
]


def _expected_shapes(kwargs):
    seq = (T, 0, U) if kwargs.get("time_major") else (0, T, U)
    shapes = [seq if kwargs.get("return_sequences") else (0, U)]
    if kwargs.get("return_state"):
        shapes += [(0, U), (0, U)]
    return shapes


def _x(kwargs, dtype="float32"):
    return np.zeros((T, 0, F) if kwargs.get("time_major") else (0, T, F), dtype)


@pytest.mark.parametrize("kwargs", MODES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_forward_shapes_and_dtypes(kwargs, dtype):
    layer = LSTM(U, dtype=dtype, **kwargs)
    outputs = T_.as_tuple(layer(_x(kwargs, dtype)))
    assert [o.shape for o in outputs] == _expected_shapes(kwargs)
    assert all(o.dtype == np.dtype(dtype) for o in outputs)
    assert layer.last_path == "empty-batch"
    assert layer.built and layer.get_weights()[0].shape == (F, 4 * U)


@pytest.mark.parametrize("kwargs", MODES)
def test_backward(kwargs):
    regs = {"kernel_regularizer": "l2", "activity_regularizer": "l1"}
    layer = LSTM(U, dtype="float64", **regs, **kwargs)
    x = _x(kwargs, "float64")
    mask = np.ones(x.shape[:2], bool)
    outputs = T_.as_tuple(layer(x, mask=mask, training=True))
    losses = [float(v) for v in layer.losses]
    assert np.isfinite(losses).all() and losses[:len(outputs)] == [0.0] * len(outputs)
    grads = layer.backward(T_.upstream_arg([np.ones(o.shape) for o in outputs],
                                           layer.return_state))
    assert grads["inputs"].shape == x.shape and grads["inputs"].dtype == np.float64
    assert [g.shape for g in grads["initial_state"]] == [(0, U), (0, U)]
    kernel, recurrent, bias = layer.get_weights()
    np.testing.assert_allclose(grads["kernel"], 0.02 * kernel)  # l2 = 0.01 * sum(w**2)
    np.testing.assert_array_equal(grads["recurrent_kernel"], np.zeros_like(recurrent))
    np.testing.assert_array_equal(grads["bias"], np.zeros_like(bias))


def test_initial_state_of_an_empty_batch():
    layer = LSTM(U, return_state=True)
    h0 = np.zeros((0, U), "float32")
    out, h, c = layer(np.zeros((0, T, F), "float32"), initial_state=[h0, h0])
    assert out.shape == h.shape == c.shape == (0, U)
    with pytest.raises(ValueError, match="initial_state"):
        layer(np.zeros((0, T, F), "float32"), initial_state=[np.zeros((1, U))] * 2)


def test_empty_batch_between_full_batches_keeps_the_layer():
    layer = LSTM(U, dtype="float64")
    x = T_.random_inputs(2, T, F)
    first = layer(x)
    layer(np.zeros((0, T, F)))
    np.testing.assert_array_equal(layer(x), first)


@pytest.mark.parametrize("kwargs,shape", [({}, (2, 0, F)), ({"time_major": True}, (0, 2, F)),
                                          ({}, (0, 0, F))])
def test_no_timesteps_is_a_clear_error(kwargs, shape):
    with pytest.raises(ValueError, match="timesteps"):
        LSTM(U, **kwargs)(np.zeros(shape, "float32"))


@pytest.mark.keras
@pytest.mark.parametrize("kwargs", MODES[:4])
def test_shapes_are_keras(kwargs):
    keras = T_.keras_or_skip()
    theirs = T_.keras_call(keras.layers.LSTM(U, use_cudnn=False, **kwargs), _x(kwargs))
    ours = T_.as_tuple(LSTM(U, **kwargs)(_x(kwargs)))
    assert [o.shape for o in ours] == [t.shape for t in theirs]
