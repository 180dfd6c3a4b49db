"""Layer behaviour not covered by the Keras comparisons: dtypes, paths, the training tape."""
import numpy as np
import pytest

from lstm_gpu import LSTM
from lstm_gpu import activations
from lstm_testlib import expected_cpu_path


def test_seed_example_shapes():
    x = np.random.default_rng(0).random((32, 10, 8)).astype("float32")
    assert LSTM(4)(x).shape == (32, 4)
    out, h, c = LSTM(4, return_sequences=True, return_state=True)(x)
    assert out.shape == (32, 10, 4) and h.shape == (32, 4) and c.shape == (32, 4)


def test_numpy_input_runs_the_default_cpu_path_and_float16_computes_in_float32():
    x = np.random.default_rng(1).standard_normal((2, 5, 3))
    ref = LSTM(4, dtype="float32")
    ref.build(x.shape)
    half = LSTM(4, dtype="float16")
    half.build(x.shape)
    half.set_weights(ref.get_weights())
    out16 = half(x.astype("float16"))
    assert half.last_path == expected_cpu_path() and out16.dtype == np.float16
    w16 = [w.astype("float16").astype("float32") for w in ref.get_weights()]
    ref.set_weights(w16)
    expected = ref(x.astype("float16").astype("float32"))
    np.testing.assert_allclose(out16.astype("float32"), expected, atol=2e-3)


def test_unsupported_keras_dtype_policy_is_not_implemented():
    with pytest.raises(NotImplementedError, match="bfloat16"):
        LSTM(2, dtype="bfloat16")


def test_backward_needs_a_training_call():
    layer = LSTM(2)
    x = np.ones((1, 3, 2), "float32")
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((1, 2), "float32"))
    layer(x, training=True)
    layer(x)
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((1, 2), "float32"))


def test_backward_checks_d_out_structure_and_shape():
    layer = LSTM(2, return_state=True)
    layer(np.ones((1, 3, 2), "float32"), training=True)
    with pytest.raises(ValueError, match="d_output, d_h, d_c"):
        layer.backward(np.ones((1, 2), "float32"))
    with pytest.raises(ValueError, match=r"d_out\[1\]"):
        layer.backward((None, np.ones((2, 2), "float32"), None))
    grads = layer.backward((None, None, None))
    assert np.all(grads["inputs"] == 0)


def test_backward_returns_keras_layout_and_input_dtype():
    layer = LSTM(3, use_bias=False, dtype="float64")
    x = np.random.default_rng(2).standard_normal((2, 4, 5))
    layer(x, training=True)
    g = layer.backward(np.ones((2, 3)))
    assert g["inputs"].shape == x.shape and g["inputs"].dtype == np.float64
    assert g["kernel"].shape == (5, 12) and g["recurrent_kernel"].shape == (3, 12)
    assert g["bias"] is None
    assert [a.shape for a in g["initial_state"]] == [(2, 3), (2, 3)]


def test_every_builtin_activation_is_elementwise_and_differentiable():
    x = np.linspace(-4, 4, 81)
    for name in activations.builtin_names():
        act = activations.get(name)
        y = act(x)
        assert y.shape == x.shape and y.dtype == x.dtype, name
        eps = 1e-6
        numeric = (act(x + eps) - act(x - eps)) / (2 * eps)
        smooth = np.abs(numeric - act.grad(x, y)) < 1e-5
        assert smooth.mean() > 0.95, name  # kinks of piecewise functions excepted


def test_legacy_hard_sigmoid_is_keras2_formula():
    x = np.array([-3.5, -3, -2.5, -1, 0, 1, 2.5, 3, 3.5])
    k3 = activations.get("hard_sigmoid")(x)
    k2 = activations.get("hard_sigmoid", legacy=True)(x)
    np.testing.assert_allclose(k2, [0, 0, 0, 0.3, 0.5, 0.7, 1, 1, 1])
    np.testing.assert_allclose(k3, [0, 0, 1 / 12, 1 / 3, 0.5, 2 / 3, 11 / 12, 1, 1])


def test_callable_activation_uses_numerical_derivative():
    layer = LSTM(2, activation=lambda z: np.tanh(z) * 0.5, dtype="float64")
    x = np.random.default_rng(3).standard_normal((1, 3, 2))
    layer(x, training=True)
    g = layer.backward(np.ones((1, 2)))
    assert np.isfinite(g["kernel"]).all()


def test_library_functions_resolve_to_builtin_kernels():
    assert activations.get(np.tanh).kernel_id == activations.KERNEL_IDS["tanh"]


def test_non_elementwise_activation_is_rejected():
    with pytest.raises(ValueError, match="element-wise"):
        LSTM(2, activation="softmax")
