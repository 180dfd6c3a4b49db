"""NaN and infinities: every activation, its derivative and its kernel form propagate NaN.

Keras's activations give NaN for a NaN input, every one of them; ours must too, in the NumPy
forms (`lstm_gpu.activations`), in the kernel forms (`kernels/lstm_cell.cuh`, through the host
build) and through the layer, so a diverged state never comes out finite. The derivative of
every activation is NaN at NaN as well (README, Semantics), so no gradient is finite through
a NaN pre-activation. At +-Inf the values are Keras's, and the kernel forms give the NumPy
forms' values and derivatives exactly.
"""
from __future__ import annotations

import numpy as np
import pytest

from lstm_gpu import LSTM, activations

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path
    import lstm_testlib as T_

NAMES = list(activations.KERNEL_IDS)
TOL = {np.float64: dict(rtol=1e-13, atol=1e-14), np.float32: dict(rtol=2e-6, atol=2e-7)}
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0])


def _numpy_forms(name, dtype):
    a = activations.get(name)
    x = SPECIAL.astype(dtype)
    with np.errstate(all="ignore"):
        y = a.fn(x)
        dy = a.grad(x, y)
    return a, x, np.asarray(y), np.asarray(dy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_numpy_forms_propagate_nan(name, dtype):
    _, x, y, dy = _numpy_forms(name, dtype)
    assert y.dtype == dtype and dy.dtype == dtype, name
    assert np.isnan(y[0]), f"{name}({x[0]}) = {y[0]}, expected NaN"
    assert np.isnan(dy[0]), f"{name}'({x[0]}) = {dy[0]}, expected NaN"
    assert not np.isnan(dy[1:]).any() or name in _NAN_DERIVATIVE_AT_INF, (name, dy)


# Derivatives whose formula is NaN at an infinity, in Keras's autograd as in ours
# (inf * 0, inf / inf); every other derivative is finite or +inf there.
_NAN_DERIVATIVE_AT_INF = ("squareplus", "silu", "gelu", "mish")


@pytest.mark.keras
@pytest.mark.parametrize("name", [n for n in NAMES if n != "hard_sigmoid_keras2"])
def test_values_at_nan_and_infinities_are_keras(name):
    keras = T_.keras_or_skip()
    import torch

    _, x, y, _ = _numpy_forms(name, np.float64)
    want = keras.activations.get(name)(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_kernel_forms_match_numpy_at_nan_and_infinities(name, dtype):
    from lstm_host_lib import act_fn, act_grad

    a, x, y, dy = _numpy_forms(name, dtype)
    tol = TOL[dtype]  # NaN where NaN, the same infinity where infinite, else close
    np.testing.assert_allclose(act_fn(a.kernel_id, x), y, **tol, err_msg=f"{name} value")
    np.testing.assert_allclose(act_grad(a.kernel_id, x, y), dy, **tol,
                               err_msg=f"{name} derivative")


@pytest.mark.parametrize("name", ["soft_shrink", "hard_shrink", "relu", "hard_tanh",
                                  "sparse_sigmoid"])
def test_layer_keeps_a_diverged_state_nan(name):
    """A NaN input at one step makes that sample's outputs NaN from that step on."""
    layer = T_.built(LSTM(3, activation=name, dtype="float64", return_sequences=True),
                     (2, 4, 2), T_.random_weights(2, 3))
    x = T_.random_inputs(2, 4, 2)
    x[0, 1, 0] = np.nan
    out = layer(x)
    assert np.isnan(out[0, 1:]).all() and np.isfinite(out[0, 0]).all()
    assert np.isfinite(out[1]).all()
