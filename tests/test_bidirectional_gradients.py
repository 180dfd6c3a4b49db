"""`Bidirectional.backward`: against Keras 3 + torch autograd, against finite differences, and
applied by the optimizers (a short training run lowers the loss)."""
from __future__ import annotations

import numpy as np
import pytest

try:
    from tests import lstm_testlib as T_
    from tests import bidirectional_testlib as BT
except ImportError:  # tests/ itself on sys.path (pytest's rootdir insertion)
    import lstm_testlib as T_
    import bidirectional_testlib as BT

B, T, F, U = 5, 4, 3, 3
RTOL = 1e-7
MERGE_MODES = ["concat", "sum", "mul", "ave", None]
OUTPUT_MODES = [(False, False), (True, False), (False, True), (True, True)]


def _ours(merge_mode="concat", weights=None, **config):
    from lstm_gpu import Bidirectional

    bi = Bidirectional(T_.make_ours(U, **config), merge_mode=merge_mode, dtype="float64")
    shape = (T, B, F) if config.get("time_major") else (B, T, F)
    return T_.built(bi, shape, weights or BT.both_weights(F, U))


# ------------------------------------------------------------------ against Keras + autograd
@pytest.mark.keras
@pytest.mark.parametrize("merge_mode", MERGE_MODES)
@pytest.mark.parametrize("return_sequences,return_state", OUTPUT_MODES)
def test_gradients_like_keras(merge_mode, return_sequences, return_state):
    kb, ob = BT.make_pair(U, (B, T, F), BT.both_weights(F, U), merge_mode=merge_mode,
                          return_sequences=return_sequences, return_state=return_state)
    x, mask = T_.random_inputs(B, T, F), T_.make_mask("mixed", B, T)
    init = T_.random_states(B, U) + T_.random_states(B, U, seed=7)
    got_out = T_.call(ob, x, mask, init, training=True)
    upstream = T_.random_upstream(got_out)
    exp_out, expected = BT.keras_grads(kb, x, upstream, mask, init)
    for g, e in zip(got_out, exp_out):
        T_.assert_close(g, e, rtol=1e-12, what="forward")
    grads = ob.backward(BT.upstream_arg(upstream))
    BT.assert_grads_close(grads, expected, RTOL, with_state=True)


@pytest.mark.keras
@pytest.mark.parametrize("mask_kind", ["none", "right", "left", "holes"])
def test_gradients_like_keras_with_masks_regularizers_and_custom_backward(mask_kind):
    config = dict(return_sequences=True, kernel_regularizer="l2", activity_regularizer="l1")
    w = BT.both_weights(F, U, backward_units=2)
    kb, ob = BT.make_pair(U, (B, T, F), w, backward={"go_backwards": True, "units": 2,
                                                    "activation": "softsign"}, **config)
    x, mask = T_.random_inputs(B, T, F), T_.make_mask(mask_kind, B, T)
    got_out = T_.call(ob, x, mask, training=True)
    upstream = T_.random_upstream(got_out)
    _, expected = BT.keras_grads(kb, x, upstream, mask)
    # Keras keeps regularizer factors as float32 tensors: agreement to float32 rounding.
    BT.assert_grads_close(ob.backward(upstream[0]), expected, 1e-6, with_state=False)


# ------------------------------------------------------------------ finite differences
FD_CASES = [
    ("concat", dict(return_sequences=True)),
    ("mul", dict(return_sequences=True, return_state=True)),
    ("ave", dict()),
    (None, dict(return_state=True)),
    ("sum", dict(return_sequences=True, time_major=True)),
]


@pytest.mark.parametrize("merge_mode,config", FD_CASES)
def test_gradients_match_finite_differences(merge_mode, config):
    bi = _ours(merge_mode, **config)
    time_major = config.get("time_major", False)
    shape = (T, B, F) if time_major else (B, T, F)
    x = T_.random_inputs(*shape)
    mask = T_.make_mask("mixed", B, T)
    mask = np.ascontiguousarray(mask.T) if time_major else mask
    init = T_.random_states(B, U) + T_.random_states(B, U, seed=7)
    upstream = T_.random_upstream(T_.call(bi, x, mask, init, training=True))
    grads = bi.backward(BT.upstream_arg(upstream))

    def loss():
        return T_.weighted_sum(T_.call(bi, x, mask, init), upstream)

    T_.assert_close(grads["inputs"], T_.fd_gradient(loss, x), rtol=1e-6, what="d/d inputs")
    for k, state in enumerate(init):
        T_.assert_close(grads["initial_state"][k], T_.fd_gradient(loss, state), rtol=1e-6,
                        what=f"d/d initial_state[{k}]")
    for direction, layer in (("forward", bi.forward_layer), ("backward", bi.backward_layer)):
        for key in ("recurrent_kernel", "bias"):
            T_.assert_close(grads[direction][key], T_.fd_gradient(loss, layer._params[key]),
                            rtol=1e-6, what=f"d/d {direction} {key}")


def test_none_upstream_entries_are_zero():
    bi = _ours(None, return_state=True)
    x = T_.random_inputs(B, T, F)
    out = T_.call(bi, x, training=True)
    upstream = T_.random_upstream(out, drop=(1, 3, 4, 5))
    grads = bi.backward(tuple(upstream))
    zeros = [np.zeros_like(o) for o in out]
    full = bi.backward(tuple(u if u is not None else z for u, z in zip(upstream, zeros)))
    np.testing.assert_array_equal(grads["inputs"], full["inputs"])
    only_backward = bi.backward((None, np.ones_like(out[1]), None, None, None, None))
    assert not np.any(only_backward["forward"]["kernel"])
    assert np.any(only_backward["backward"]["kernel"])


# ------------------------------------------------------------------ optimizers
def test_optimizer_applies_both_directions_in_one_step():
    from lstm_gpu.constraints import NonNeg
    from lstm_gpu.optimizers import SGD

    bi = _ours("concat")
    bi.backward_layer.bias_constraint = NonNeg()
    before = bi.get_weights()
    x = T_.random_inputs(B, T, F)
    out = bi(x, training=True)
    grads = bi.backward(np.ones_like(out))
    opt = SGD(learning_rate=0.1)
    opt.apply(bi, grads)
    assert opt.iterations == 1
    flat = [grads["forward"][k] for k in BT.WEIGHT_KEYS] + \
           [grads["backward"][k] for k in BT.WEIGHT_KEYS]
    for k, (w0, g, w1) in enumerate(zip(before, flat, bi.get_weights())):
        expected = w0 - 0.1 * g
        if k == 5:
            expected = np.maximum(expected, 0)
        np.testing.assert_allclose(w1, expected, rtol=1e-15, atol=1e-15)


def test_optimizer_leaves_a_frozen_wrapper_alone():
    from lstm_gpu.optimizers import Adam

    bi = _ours("sum")
    bi.trainable = False
    assert bi.trainable_weights == [] and not bi.forward_layer.trainable
    before = bi.get_weights()
    out = bi(T_.random_inputs(B, T, F), training=True)
    Adam().apply(bi, bi.backward(np.ones_like(out)))
    for w0, w1 in zip(before, bi.get_weights()):
        np.testing.assert_array_equal(w0, w1)


@pytest.mark.parametrize("merge_mode", ["concat", "mul"])
def test_short_training_run_lowers_the_loss(merge_mode):
    """Fit a target that needs both directions (the first and last step's inputs)."""
    from lstm_gpu import Bidirectional
    from lstm_gpu.optimizers import Adam

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6, 2))
    target = np.tanh(x[:, 0, :1] - x[:, -1, 1:])  # (16, 1)
    bi = Bidirectional(T_.make_ours(4, seed=1, kernel_initializer="glorot_uniform"),
                       merge_mode=merge_mode, dtype="float64")
    head = {"w": 0.1 * rng.standard_normal((4 if merge_mode == "mul" else 8, 1))}
    opt_bi, opt_head = Adam(learning_rate=0.03), Adam(learning_rate=0.03)
    losses = []
    for _ in range(40):
        out = bi(x, training=True)
        err = out @ head["w"] - target
        losses.append(float(np.mean(err ** 2)))
        d_pred = 2 * err / err.size
        d_out, d_head = d_pred @ head["w"].T, out.T @ d_pred
        opt_head.apply(head, {"w": d_head})
        opt_bi.apply(bi, bi.backward(d_out))
    assert losses[-1] < 0.3 * losses[0], losses
