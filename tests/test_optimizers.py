"""Optimizers follow Keras 3's update rules (checked against Keras itself when installed)."""
import numpy as np
import pytest

from lstm_gpu import LSTM
from lstm_gpu.initializers import GlorotUniform, Orthogonal
from lstm_gpu.optimizers import SGD, Adam


def _keras_steps(opt_name, kwargs, w0, grads, constraint=None):
    keras = pytest.importorskip("keras")
    var = keras.Variable(w0.copy(), dtype="float64", constraint=constraint)
    opt = getattr(keras.optimizers, opt_name)(**kwargs)
    for g in grads:
        opt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])
    return np.asarray(keras.ops.convert_to_numpy(var.value))


def _our_steps(opt_cls, kwargs, w0, grads, constraint=None):
    params = {"w": w0.copy()}
    opt = opt_cls(**kwargs)
    for g in grads:
        opt.apply(params, {"w": g})
        if constraint is not None:
            params["w"][...] = constraint(params["w"])
    return params["w"]


CASES = [
    ("SGD", SGD, {}),
    ("SGD", SGD, {"learning_rate": 0.1, "momentum": 0.9}),
    ("SGD", SGD, {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Adam", Adam, {}),
    ("Adam", Adam, {"learning_rate": 0.01, "amsgrad": True}),
    ("Adam", Adam, {"learning_rate": 0.01, "beta_1": 0.5, "epsilon": 1e-3}),
    ("SGD", SGD, {"learning_rate": 0.1, "clipnorm": 0.5}),
    ("SGD", SGD, {"learning_rate": 0.1, "clipvalue": 0.2}),
    ("Adam", Adam, {"learning_rate": 0.01, "weight_decay": 0.1}),
]


@pytest.mark.keras
@pytest.mark.parametrize("name,cls,kwargs", CASES)
def test_update_rules_match_keras(name, cls, kwargs):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(4)]
    ours = _our_steps(cls, kwargs, w0, grads)
    theirs = _keras_steps(name, kwargs, w0, grads)
    # Keras keeps learning_rate etc. as float32 variables: agreement to float32 rounding.
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


def test_sgd_plain_rule_by_hand():
    w = np.array([1.0, -2.0])
    SGD(learning_rate=0.5).apply({"w": w}, {"w": np.array([2.0, 2.0])})
    np.testing.assert_allclose(w, [0.0, -3.0])


def test_adam_first_step_is_lr_times_sign():
    w = np.zeros(3)
    Adam(learning_rate=0.1, epsilon=0.0).apply({"w": w}, {"w": np.array([3.0, -0.5, 2.0])})
    np.testing.assert_allclose(w, [-0.1, 0.1, -0.1])


def test_apply_to_layer_updates_weights_and_applies_constraints():
    layer = LSTM(3, kernel_constraint="non_neg", recurrent_constraint="unit_norm",
                 kernel_initializer=GlorotUniform(seed=0), recurrent_initializer=Orthogonal(seed=1),
                 dtype="float64")
    x = np.random.default_rng(1).standard_normal((2, 4, 5))
    layer(x, training=True)
    grads = layer.backward(np.ones((2, 3)))
    before = [w.copy() for w in layer.get_weights()]
    SGD(learning_rate=0.5).apply(layer, grads)
    after = layer.get_weights()
    assert np.all(after[0] >= 0)
    # Keras's UnitNorm divides by (1e-7 + norm): unit up to that epsilon.
    np.testing.assert_allclose(np.linalg.norm(after[1], axis=0), 1.0, rtol=1e-5)
    expected_bias = before[2] - 0.5 * grads["bias"]
    np.testing.assert_allclose(after[2], expected_bias)


def test_non_trainable_layer_is_not_updated():
    layer = LSTM(2, trainable=False)
    x = np.ones((1, 3, 2), "float32")
    layer(x, training=True)
    grads = layer.backward(np.ones((1, 2), "float32"))
    before = layer.get_weights()
    Adam().apply(layer, grads)
    for a, b in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="learning_rate"):
        SGD(learning_rate=-1)
    with pytest.raises(ValueError, match="momentum"):
        SGD(momentum=2)
    with pytest.raises(ValueError, match="shape"):
        SGD().apply({"w": np.zeros(3)}, {"w": np.zeros(4)})
    with pytest.raises(TypeError, match="target"):
        SGD().apply([np.zeros(3)], {})
