"""The conventions README's Semantics section writes down, pinned.

- selu'(0) is `scale` (TensorFlow's SeluGrad: the x >= 0 branch), in NumPy and in the
  kernels; Keras on torch and JAX differentiate the other branch and get scale * alpha.
- Where we are stricter than Keras on purpose: dropout rates outside [0, 1) are rejected
  (Keras clamps them), masks and states must have the exact shapes (no broadcasting),
  complex inputs are rejected with a TypeError rather than cast.
"""
from __future__ import annotations

import numpy as np
import pytest

from lstm_gpu import LSTM, activations

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path
    import lstm_testlib as T_

B, T, F, U = 2, 3, 2, 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_selu_derivative_at_zero_is_scale(dtype):
    selu = activations.get("selu")
    x = np.zeros(1, dtype)
    assert selu.grad(x, selu(x))[0] == dtype(activations.SELU_SCALE)


def test_selu_derivative_at_zero_in_the_kernels():
    from lstm_host_lib import act_grad

    x = np.zeros(1)
    assert act_grad(activations.KERNEL_IDS["selu"], x, x)[0] == activations.SELU_SCALE


@pytest.mark.keras
def test_keras_takes_the_other_branch_of_selu_at_zero():
    T_.keras_or_skip()
    import keras
    import torch

    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(keras.activations.selu(x).sum(), x)
    scale, alpha = activations.SELU_SCALE, activations.SELU_ALPHA
    assert g.item() == pytest.approx(scale * alpha)


@pytest.mark.parametrize("argument", ["dropout", "recurrent_dropout"])
@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_dropout_outside_zero_one_is_rejected(argument, rate):
    with pytest.raises(ValueError, match=argument):
        LSTM(U, **{argument: rate})


@pytest.mark.keras
def test_keras_clamps_dropout():
    keras = T_.keras_or_skip()
    assert keras.layers.LSTM(U, dropout=1.5).cell.dropout == 1.0


def test_broadcast_mask_is_rejected():
    layer = LSTM(U)
    x = np.ones((B, T, F), "float32")
    with pytest.raises(ValueError, match="mask"):
        layer(x, mask=np.ones((1, T), bool))


def test_broadcast_initial_state_is_rejected():
    layer = LSTM(U)
    x = np.ones((B, T, F), "float32")
    with pytest.raises(ValueError, match="initial_state"):
        layer(x, initial_state=[np.zeros((1, U), "float32")] * 2)


def test_complex_inputs_are_rejected():
    with pytest.raises(TypeError, match="inputs"):
        LSTM(U)(np.ones((B, T, F), complex))


def test_nan_derivative_everywhere():
    """Every derivative is NaN at NaN (Keras's autograd gives 1 for relu, 0.2 for
    leaky_relu there): a diverged pre-activation never yields a finite gradient."""
    x = np.array([np.nan])
    for name in activations.builtin_names():
        a = activations.get(name)
        assert np.isnan(a.grad(x, a(x))).all(), name
