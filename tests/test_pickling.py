"""Layers and optimizers pickle, unpickle and deep-copy with their weights, states, config,
dropout stream and (optimizers) slots.

A copy continues exactly where the original is: the next calls and optimizer steps give the
same numbers. The training record is not copied (README): `backward` on a copy raises until
its next training call. Pickle an optimizer together with the layers it trains (one
`pickle.dumps((layer, opt))`) so that its slots stay attached to their weights. A Python
callable that pickle cannot serialize (a lambda) gives an error naming the argument.
"""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from lstm_gpu import LSTM, activations
from lstm_gpu.compat import v1
from lstm_gpu.optimizers import SGD, Adam

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path
    import lstm_testlib as T_

B, T, F, U = 3, 4, 2, 5


def pickled(obj):
    return pickle.loads(pickle.dumps(obj))


def deep(obj):
    return copy.deepcopy(obj)


COPIES = [pickled, deep]


def softsign_like(x):
    """A module-level callable activation: pickles by reference."""
    return x / (1 + np.abs(x))


def _trained_layer(**kwargs):
    layer = LSTM(U, dtype="float64", **kwargs)
    x = T_.random_inputs(B, T, F)
    outputs = T_.call(layer, x, training=True)
    layer.backward(T_.upstream_arg(T_.random_upstream(outputs), layer.return_state))
    layer(x + 1, training=True)  # a record present: copies drop it
    return layer


def _assert_same_layer(a, b):
    assert a.get_config() == b.get_config()
    assert type(a) is type(b) and a.built == b.built
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert len(a.get_weights()) == len(b.get_weights())
    assert (a.states is None) == (b.states is None)
    for sa, sb in zip(a.states or [], b.states or []):
        np.testing.assert_array_equal(sa, sb)
    assert [float(v) for v in a.losses] == [float(v) for v in b.losses]


@pytest.mark.parametrize("make", COPIES)
def test_unbuilt_layer(make):
    layer = LSTM(3)
    clone = make(layer)
    assert not clone.built and clone.get_config() == layer.get_config()
    x = np.ones((2, 4, 2), "float32")
    assert clone(x).shape == (2, 3)


@pytest.mark.parametrize("make", COPIES)
@pytest.mark.parametrize("kwargs", [
    {"dropout": 0.3, "recurrent_dropout": 0.2, "seed": 4, "return_sequences": True},
    {"stateful": True, "return_state": True, "kernel_regularizer": "l2",
     "activity_regularizer": "l1", "recurrent_constraint": "unit_norm"},
    {"activation": softsign_like, "recurrent_activation": "hard_sigmoid", "go_backwards": True},
    {"dropout": 0.5},  # unseeded: the copy continues the same stream
])
def test_trained_layer_continues_identically(make, kwargs):
    layer = _trained_layer(**kwargs)
    clone = make(layer)
    _assert_same_layer(layer, clone)
    with pytest.raises(RuntimeError, match="training=True"):
        clone.backward(np.ones((B, U)))
    x = T_.random_inputs(B, T, F, seed=9)
    for _ in range(2):
        ours, theirs = T_.call(layer, x, training=True), T_.call(clone, x, training=True)
        T_.assert_outputs_close(theirs, ours, rtol=0, what=kwargs)
        d_out = T_.upstream_arg(T_.random_upstream(ours), layer.return_state)
        ga, gb = layer.backward(d_out), clone.backward(d_out)
        np.testing.assert_array_equal(ga["kernel"], gb["kernel"])


@pytest.mark.parametrize("make", COPIES)
def test_copy_is_independent(make):
    layer = _trained_layer(stateful=True)
    clone = make(layer)
    clone.set_weights([w + 1 for w in clone.get_weights()])
    clone.reset_states()
    assert not np.array_equal(layer.get_weights()[0], clone.get_weights()[0])
    assert np.any(layer.states[0] != 0)


@pytest.mark.parametrize("make", COPIES)
def test_compat_v1_layer_keeps_keras2_hard_sigmoid(make):
    layer = v1.LSTM(U)
    clone = make(layer)
    assert type(clone) is v1.LSTM
    assert clone.recurrent_activation.kernel_id == activations.KERNEL_IDS["hard_sigmoid_keras2"]
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("make", COPIES)
@pytest.mark.parametrize("name", activations.builtin_names())
def test_every_builtin_activation(make, name):
    a = activations.get(name)
    b = make(a)
    assert (b.name, b.kernel_id) == (a.name, a.kernel_id)
    x = np.linspace(-4, 4, 9)
    np.testing.assert_array_equal(b(x), a(x))


@pytest.mark.parametrize("argument", ["activation", "recurrent_activation",
                                      "kernel_initializer", "bias_regularizer",
                                      "kernel_constraint"])
def test_unpicklable_callable_names_the_argument(argument):
    fn = {"activation": lambda x: x, "recurrent_activation": lambda x: x,
          "kernel_initializer": lambda shape, dtype: np.zeros(shape, dtype),
          "bias_regularizer": lambda w: (w * w).sum(),
          "kernel_constraint": lambda w: w}[argument]
    layer = LSTM(U, **{argument: fn})
    with pytest.raises(TypeError, match=argument) as info:
        pickle.dumps(layer)
    assert "lambda" in str(info.value)
    assert deep(layer).get_config()[argument] is fn  # deepcopy shares the function


# ------------------------------------------------------------------ optimizers
def _train(layer, opt, x, steps):
    for _ in range(steps):
        layer(x, training=True)
        opt.apply(layer, layer.backward(np.ones((B, U))))


@pytest.mark.parametrize("make", COPIES)
@pytest.mark.parametrize("opt", [lambda: SGD(0.1, momentum=0.9, nesterov=True),
                                 lambda: Adam(0.01, amsgrad=True, clipnorm=1.0),
                                 lambda: Adam(0.01, weight_decay=0.1)])
def test_layer_and_optimizer_together_continue_identically(make, opt):
    layer, optimizer = LSTM(U, dtype="float64", kernel_constraint="max_norm"), opt()
    x = T_.random_inputs(B, T, F)
    _train(layer, optimizer, x, 3)
    layer2, optimizer2 = make((layer, optimizer))
    assert optimizer2.iterations == optimizer.iterations == 3
    _train(layer, optimizer, x, 2)
    _train(layer2, optimizer2, x, 2)
    for a, b in zip(layer.get_weights(), layer2.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", COPIES)
def test_optimizer_of_a_dict_of_arrays(make):
    params, opt = {"w": np.ones(3)}, Adam(0.1)
    g = {"w": np.array([1.0, -2.0, 3.0])}
    opt.apply(params, g)
    params2, opt2 = make((params, opt))
    opt.apply(params, g)
    opt2.apply(params2, g)
    np.testing.assert_array_equal(params["w"], params2["w"])


@pytest.mark.parametrize("make", COPIES)
def test_optimizer_alone_keeps_hyperparameters(make):
    opt = Adam(0.02, beta_1=0.8, clipvalue=0.5)
    clone = make(opt)
    assert (clone.learning_rate, clone.beta_1, clone.clipvalue) == (0.02, 0.8, 0.5)


@pytest.mark.gpu
def test_cupy_weights_come_back_on_their_device():
    import cupy as cp

    device = cp.cuda.runtime.getDeviceCount() - 1  # the last GPU: not the current one if 2+
    with cp.cuda.Device(device):
        x = cp.asarray(T_.random_inputs(B, T, F))
        layer = LSTM(U, dtype="float64", stateful=True)
        layer(x)
    with cp.cuda.Device(0):
        clone = pickled(layer)
    for w in clone.weights + clone.states:
        assert isinstance(w, cp.ndarray) and w.device.id == device
    _assert_same_layer(layer, clone)
    with cp.cuda.Device(device):
        np.testing.assert_array_equal(cp.asnumpy(clone(x)), cp.asnumpy(layer(x)))


def test_gpu_weights_unpickled_without_that_gpu_come_back_as_numpy():
    """The portable form of a CuPy array (host copy + device id), restored where CuPy or the
    device is missing: NumPy, with a warning, and the layer runs on NumPy."""
    from lstm_gpu._xp import OnDevice, gpu_available

    if gpu_available():
        pytest.skip("a GPU is visible: the GPU test covers the restoring branch")
    layer = _trained_layer(stateful=True)
    state = layer.__getstate__()
    state["_params"] = {k: OnDevice(v, 1) for k, v in state["_params"].items()}
    state["states"] = [OnDevice(s, 1) for s in state["states"]]
    clone = LSTM.__new__(LSTM)
    with pytest.warns(RuntimeWarning, match="GPU 1"):
        clone.__setstate__(state)
    _assert_same_layer(layer, clone)
    x = T_.random_inputs(B, T, F)
    np.testing.assert_array_equal(clone(x), layer(x))
