"""`layer.backward` against central finite differences (float64, small shapes).

loss = sum_k sum(out_k * G_k) + sum(layer.losses), G random, mirroring the outputs.
With dropout the masks must be the same in every evaluation: each evaluation (and the
analytic one) runs on a *fresh* layer built with the same seed and the same weights, so a
seeded layer's first call must draw the same masks every time (Keras re-draws masks on every
call from its SeedGenerator, so one layer's successive calls differ).
"""
from __future__ import annotations

import numpy as np
import pytest

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path (pytest's rootdir insertion)
    import lstm_testlib as T_

pytestmark = pytest.mark.usefixtures("cpu_path")

B, T, F, U = 3, 4, 3, 3
EPS = 1e-6
TOL = 1e-7


def _check(mask_kind="mixed", with_state=True, drop=(), x_scale=1.0, w_scale=0.5,
           steps=T, units=U, **config):
    time_major = config.get("time_major", False)
    use_bias = config.get("use_bias", True)
    return_state = config.get("return_state", False)
    seeded = config.get("dropout", 0) or config.get("recurrent_dropout", 0)
    if seeded:
        config.setdefault("seed", 1234)

    weights = T_.random_weights(F, units, use_bias=use_bias, scale=w_scale)
    x = T_.random_inputs(B, steps, F, scale=x_scale)
    mask = T_.make_mask(mask_kind, B, steps)
    init = T_.random_states(B, units) if with_state else None
    if time_major:
        x = np.ascontiguousarray(x.transpose(1, 0, 2))
        mask = None if mask is None else np.ascontiguousarray(mask.T)
    shape = x.shape

    def fresh():
        return T_.built(T_.make_ours(units, "float64", **config), shape, weights)

    layer = fresh()

    def loss():
        nonlocal layer
        if seeded:
            layer = fresh()
        else:
            layer.set_weights(weights)
        out = T_.call(layer, x, mask, init, training=True)
        return T_.weighted_sum(out, upstream) + T_.total_losses(layer)

    out = T_.call(fresh(), x, mask, init, training=True)
    upstream = T_.random_upstream(out, drop=drop)

    analytic_layer = fresh()
    T_.call(analytic_layer, x, mask, init, training=True)
    grads = analytic_layer.backward(T_.upstream_arg(upstream, return_state))

    targets = [("inputs", x, grads["inputs"])]
    if with_state:
        targets += [("h0", init[0], grads["initial_state"][0]),
                    ("c0", init[1], grads["initial_state"][1])]
    names = ["kernel", "recurrent_kernel", "bias"][: len(weights)]
    targets += [(n, w, grads[n]) for n, w in zip(names, weights)]
    if not use_bias:
        assert grads["bias"] is None
    for name, array, analytic in targets:
        numeric = T_.fd_gradient(loss, array, EPS)
        T_.assert_close(analytic, numeric, rtol=TOL, what=f"d loss / d {name}")


@pytest.mark.parametrize("mask_kind", T_.MASK_KINDS)
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_masks(mask_kind, go_backwards, return_sequences):
    _check(mask_kind, go_backwards=go_backwards, return_sequences=return_sequences,
           return_state=True)


@pytest.mark.parametrize("mask_kind", ["none", "left", "holes", "mixed"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_zero_output_for_mask(mask_kind, return_sequences):
    _check(mask_kind, zero_output_for_mask=True, return_sequences=return_sequences,
           return_state=True)


@pytest.mark.parametrize("mask_kind", ["none", "mixed"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_time_major(mask_kind, go_backwards):
    _check(mask_kind, time_major=True, go_backwards=go_backwards, return_sequences=True,
           return_state=True)


@pytest.mark.parametrize("implementation", [1, 2])
@pytest.mark.parametrize("use_bias", [True, False])
def test_implementation_and_bias(implementation, use_bias):
    _check("mixed", implementation=implementation, use_bias=use_bias, return_sequences=True,
           return_state=True)


@pytest.mark.parametrize("return_sequences,return_state,drop", [
    (False, False, ()), (True, False, ()), (False, True, (0,)), (False, True, (1, 2)),
    (True, True, (2,)),
])
def test_output_modes(return_sequences, return_state, drop):
    _check("mixed", return_sequences=return_sequences, return_state=return_state, drop=drop)


def test_without_initial_state():
    _check("mixed", with_state=False, return_sequences=True, return_state=True)


def test_unroll():
    _check("mixed", unroll=True, go_backwards=True, return_sequences=True, return_state=True)


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "elu", "gelu", "mish", "silu",
                                  "exponential", "squareplus", "log_sigmoid", "tanh_shrink"])
@pytest.mark.parametrize("which", ["activation", "recurrent_activation"])
def test_activations(name, which):
    small = name == "exponential"
    _check("mixed", x_scale=0.3 if small else 1.0, w_scale=0.05 if small else 0.5,
           return_sequences=True, return_state=True, **{which: name})


@pytest.mark.parametrize("dropout,recurrent_dropout,implementation", [
    (0.3, 0.0, 2), (0.3, 0.0, 1), (0.0, 0.4, 1), (0.0, 0.4, 2), (0.3, 0.4, 1),
])
@pytest.mark.parametrize("mask_kind", ["none", "mixed"])
def test_dropout(dropout, recurrent_dropout, implementation, mask_kind):
    _check(mask_kind, dropout=dropout, recurrent_dropout=recurrent_dropout,
           implementation=implementation, return_sequences=True, return_state=True)


@pytest.mark.parametrize("return_state", [False, True])
@pytest.mark.parametrize("activity", ["l2", "l1"])
def test_regularizers(return_state, activity):
    """Weight and activity regularizer gradients are part of backward's result."""
    _check("holes", kernel_regularizer="l2", recurrent_regularizer="l1",
           bias_regularizer="l1", activity_regularizer=activity, return_sequences=True,
           return_state=return_state)


def test_activity_regularizer_only_last_output():
    _check("right", activity_regularizer="l2", return_sequences=False, return_state=False)


def test_longer_sequence_more_units():
    _check("mixed", steps=7, units=5, go_backwards=True, return_sequences=True,
           return_state=True)
