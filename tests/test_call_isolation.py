"""A call owns what its backward needs, and a failed call changes nothing.

- The training record never aliases the caller's arrays: editing the inputs, the mask or the
  returned outputs between a training call and `backward` changes no gradient (x is used
  as is when it is already contiguous, in the compute dtype and in processing order: batch 1
  or time_major=True).
- A call that raises (here a callable activation) leaves the layer exactly as it was: the
  previous record (backward still works on it), the states, the weights, `last_path`,
  `losses`, and the seeded dropout stream (the next call draws what it would have drawn).
"""
from __future__ import annotations

import numpy as np
import pytest

from lstm_gpu import LSTM

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path
    import lstm_testlib as T_

F, U = 3, 4


def _layer(shape, **kwargs):
    kwargs.setdefault("dtype", "float64")
    return T_.built(LSTM(U, **kwargs), shape, T_.random_weights(F, U))


def _grads(layer, x, d_out, edit=None, **call):
    out = layer(x, training=True, **call)
    if edit is not None:
        edit(x, out)
    return layer.backward(d_out)


def _assert_same_grads(a, b):
    for key in ("inputs", "kernel", "recurrent_kernel", "bias"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for k in range(2):
        np.testing.assert_array_equal(a["initial_state"][k], b["initial_state"][k])


@pytest.mark.parametrize("kwargs,shape", [
    ({}, (1, 5, F)),                                   # batch 1: (B,T,F) -> (T,B,F) is a view
    ({"time_major": True}, (5, 2, F)),                  # already time-major
    ({"time_major": True, "go_backwards": True}, (1, 2, F)),  # one step: reversal is a view
    ({"dtype": "float32"}, (1, 4, F)),
])
def test_editing_inputs_after_a_training_call_changes_no_gradient(kwargs, shape):
    dtype = kwargs.get("dtype", "float64")
    x = T_.random_inputs(*shape, dtype=dtype)
    batch = shape[1] if kwargs.get("time_major") else shape[0]
    d_out = T_.rng(7).standard_normal((batch, U)).astype(dtype)
    want = _grads(_layer(shape, **kwargs), x.copy(), d_out)

    def edit(x, out):
        x[...] = 100.0

    got = _grads(_layer(shape, **kwargs), x.copy(), d_out, edit=edit)
    _assert_same_grads(got, want)


def test_editing_the_mask_after_a_training_call_changes_no_gradient():
    shape = (1, 5, F)
    x = T_.random_inputs(*shape)
    mask = np.array([[True, True, False, True, True]])
    d_out = np.ones((1, U))
    want = _grads(_layer(shape), x, d_out, mask=mask.copy())
    m = mask.copy()

    def edit(x, out):
        m[...] = False

    got = _grads(_layer(shape), x, d_out, edit=edit, mask=m)
    _assert_same_grads(got, want)


@pytest.mark.parametrize("kwargs", [{"return_sequences": True}, {},
                                    {"return_sequences": True, "return_state": True}])
def test_editing_returned_outputs_changes_no_activity_gradient(kwargs):
    shape = (2, 4, F)
    x = T_.random_inputs(*shape)
    reg = {"activity_regularizer": "l2"}
    ref = _layer(shape, **reg, **kwargs)
    outputs = T_.call(ref, x, training=True)
    upstream = T_.random_upstream(outputs)
    want = ref.backward(T_.upstream_arg(upstream, ref.return_state))

    layer = _layer(shape, **reg, **kwargs)
    for o in T_.call(layer, x, training=True):
        o[...] = 5.0
    got = layer.backward(T_.upstream_arg(upstream, layer.return_state))
    _assert_same_grads(got, want)


class Flaky:
    """tanh, or an exception while `fail` is set (a callable activation that raises)."""

    def __init__(self):
        self.fail = False

    def __call__(self, x):
        if self.fail:
            raise RuntimeError("activation failed on purpose")
        return np.tanh(x)

    @staticmethod
    def derivative(x, y):
        return 1 - y * y


def _state_of(layer):
    return ([w.copy() for w in layer.get_weights()],
            [np.array(s, copy=True) for s in (layer.states or [])],
            layer.last_path, [float(v) for v in layer.losses])


@pytest.mark.parametrize("kwargs", [
    {"dropout": 0.3, "recurrent_dropout": 0.2, "seed": 11},
    {"dropout": 0.3, "seed": 5, "stateful": True, "activity_regularizer": "l2"},
])
def test_a_failed_call_leaves_the_layer_as_it_was(kwargs):
    shape = (2, 4, F)
    x1, x2 = T_.random_inputs(*shape, seed=1), T_.random_inputs(*shape, seed=2)
    d_out = np.ones((2, U))
    act = Flaky()
    layer = _layer(shape, activation=act, **kwargs)
    twin = _layer(shape, activation=Flaky(), **kwargs)  # same calls, without the failure

    layer(x1, training=True)
    twin(x1, training=True)
    before = _state_of(layer)
    act.fail = True
    with pytest.raises(RuntimeError, match="on purpose"):
        layer(x2, training=True)
    act.fail = False
    after = _state_of(layer)
    for a, b in zip(before[0] + before[1], after[0] + after[1]):
        np.testing.assert_array_equal(a, b)
    assert before[2:] == after[2:]

    _assert_same_grads(layer.backward(d_out), twin.backward(d_out))  # the record survived
    T_.assert_outputs_close(T_.call(layer, x2, training=True), T_.call(twin, x2, training=True),
                            rtol=0, what="next call: same dropout masks, same states")
    _assert_same_grads(layer.backward(d_out), twin.backward(d_out))


def test_a_failed_first_call_still_leaves_a_working_layer():
    act = Flaky()
    act.fail = True
    layer = LSTM(U, activation=act)
    with pytest.raises(RuntimeError):
        layer(np.ones((2, 3, F), "float32"))
    act.fail = False
    assert layer(np.ones((2, 3, F), "float32")).shape == (2, U)


@pytest.mark.gpu
def test_cupy_failed_call_and_dropout_stream():
    """On the GPU: seeded masks reproduce (cuRAND Philox per call), a failed call restores
    the stream, and a training record does not alias a batch-1 CuPy input."""
    import cupy as cp

    shape = (1, 4, F)
    x = cp.asarray(T_.random_inputs(*shape))
    act = Flaky()
    kwargs = dict(dropout=0.4, recurrent_dropout=0.3, seed=3, return_sequences=True)
    layer, twin = _layer(shape, activation=act, **kwargs), _layer(shape, activation=Flaky(),
                                                                   **kwargs)
    first = layer(x, training=True)
    np.testing.assert_array_equal(cp.asnumpy(first), cp.asnumpy(twin(x, training=True)))
    act.fail = True
    with pytest.raises(RuntimeError):
        layer(x, training=True)
    act.fail = False
    out = layer(x, training=True)
    np.testing.assert_array_equal(cp.asnumpy(out), cp.asnumpy(twin(x.copy(), training=True)))
    x[...] = 100.0  # the layer's input only
    d = cp.ones_like(out)
    got, want = layer.backward(d), twin.backward(d)
    np.testing.assert_array_equal(cp.asnumpy(got["kernel"]), cp.asnumpy(want["kernel"]))
