"""`layer.backward` against torch autograd through Keras 3 (torch backend, use_cudnn=False).

float64, the same weights in both layers, loss = sum_k sum(out_k * G_k) (+ sum(layer.losses)
when regularizers are set), G a random upstream gradient mirroring the outputs.
"""
from __future__ import annotations


import numpy as np
import pytest

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path (pytest's rootdir insertion)
    import lstm_testlib as T_

pytestmark = [pytest.mark.keras, pytest.mark.usefixtures("cpu_path")]

B, T, F, U = 6, 5, 3, 4
RTOL = 1e-7
GRAD_KEYS = ("inputs", "kernel", "recurrent_kernel", "bias")


def _compare(mask_kind="mixed", with_state=True, drop=(), ours_extra=None, x_scale=1.0,
             w_scale=0.5, **config):
    T_.keras_or_skip()
    use_bias = config.get("use_bias", True)
    w = T_.random_weights(F, U, use_bias=use_bias, scale=w_scale)
    kl = T_.built(T_.make_keras(U, "float64", **config), (B, T, F), w)
    ol = T_.built(T_.make_ours(U, "float64", **config, **(ours_extra or {})), (B, T, F), w)
    x = T_.random_inputs(B, T, F, scale=x_scale)
    mask = T_.make_mask(mask_kind, B, T)
    init = T_.random_states(B, U) if with_state else None

    got_out = T_.call(ol, x, mask, init, training=True)
    upstream = T_.random_upstream(got_out, drop=drop)
    exp_out, expected = T_.keras_grads(kl, x, upstream, mask, init)
    T_.assert_outputs_close(got_out, exp_out, rtol=1e-12, what="forward")

    grads = ol.backward(T_.upstream_arg(upstream, config.get("return_state", False)))
    assert set(GRAD_KEYS + ("initial_state",)) <= set(grads), sorted(grads)
    for key in GRAD_KEYS:
        if key == "bias" and not use_bias:
            assert grads["bias"] is None
            continue
        e = expected[key]
        if e is None:  # torch: unused leaf (e.g. every step masked) -> zero gradient
            e = np.zeros_like(T_.to_numpy(grads[key]))
        T_.assert_close(grads[key], e, rtol=RTOL, what=f"d/d {key}")
    if with_state:
        for k, name in enumerate(("h0", "c0")):
            e = expected["initial_state"][k]
            if e is None:
                e = np.zeros((B, U))
            T_.assert_close(grads["initial_state"][k], e, rtol=RTOL, what=f"d/d {name}")
    return grads


OUTPUT_MODES = [(True, True), (False, True), (True, False), (False, False)]


@pytest.mark.parametrize("mask_kind", T_.MASK_KINDS)
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences,return_state", OUTPUT_MODES)
def test_masks_and_outputs(mask_kind, go_backwards, return_sequences, return_state):
    _compare(mask_kind, go_backwards=go_backwards, return_sequences=return_sequences,
             return_state=return_state)


@pytest.mark.parametrize("mask_kind", T_.MASK_KINDS)
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_zero_output_for_mask(mask_kind, return_sequences, go_backwards):
    _compare(mask_kind, zero_output_for_mask=True, return_sequences=return_sequences,
             go_backwards=go_backwards, return_state=True)


@pytest.mark.parametrize("mask_kind", ["none", "holes", "mixed"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_implementation_1(mask_kind, go_backwards):
    _compare(mask_kind, implementation=1, go_backwards=go_backwards, return_sequences=True,
             return_state=True)


@pytest.mark.parametrize("mask_kind", ["none", "mixed"])
@pytest.mark.parametrize("implementation", [1, 2])
def test_use_bias_false(mask_kind, implementation):
    _compare(mask_kind, use_bias=False, implementation=implementation,
             return_sequences=True, return_state=True)


@pytest.mark.parametrize("name", T_.SMOOTH_ACTIVATIONS + ("relu", "hard_sigmoid", "hard_silu",
                                                         "leaky_relu", "soft_shrink"))
@pytest.mark.parametrize("which", ["activation", "recurrent_activation"])
def test_activations(name, which):
    small = name == "exponential"
    _compare("mixed", x_scale=0.3 if small else 1.0, w_scale=0.05 if small else 0.5,
             return_sequences=True, return_state=True, **{which: name})


@pytest.mark.parametrize("drop", [(1,), (2,), (1, 2), (0,), (0, 2)])
def test_upstream_entries_may_be_none(drop):
    """d_out = (d_output, d_h, d_c) with some entries None."""
    _compare("mixed", drop=drop, return_sequences=True, return_state=True)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_without_initial_state(return_sequences):
    grads = _compare("mixed", with_state=False, return_sequences=return_sequences,
                     return_state=True)
    if grads["initial_state"] is not None:
        assert len(grads["initial_state"]) == 2


@pytest.mark.parametrize("mask_kind", ["none", "mixed"])
def test_unroll(mask_kind):
    _compare(mask_kind, unroll=True, return_sequences=True, return_state=True)


@pytest.mark.parametrize("return_state", [False, True])
def test_regularizers(return_state):
    """Weight grads include the kernel/recurrent/bias and activity regularizer gradients.
    (Keras computes the regularizer factors in float32, hence the looser tolerance.)"""
    T_.keras_or_skip()
    config = dict(kernel_regularizer="l2", recurrent_regularizer="l2", bias_regularizer="l1",
                  activity_regularizer="l2", return_sequences=True,
                  return_state=return_state)
    w = T_.random_weights(F, U)
    kl = T_.built(T_.make_keras(U, "float64", **config), (B, T, F), w)
    ol = T_.built(T_.make_ours(U, "float64", **config), (B, T, F), w)
    x = T_.random_inputs(B, T, F)
    mask = T_.make_mask("mixed", B, T)
    init = T_.random_states(B, U)
    out = T_.call(ol, x, mask, init, training=True)
    upstream = T_.random_upstream(out)
    _, expected = T_.keras_grads(kl, x, upstream, mask, init)
    grads = ol.backward(T_.upstream_arg(upstream, return_state))
    for key in GRAD_KEYS:
        T_.assert_close(grads[key], expected[key], rtol=1e-6, what=f"d/d {key}")
    for k in range(2):
        T_.assert_close(grads["initial_state"][k], expected["initial_state"][k], rtol=1e-6,
                        what=f"d/d initial_state[{k}]")


@pytest.mark.parametrize("mask_kind", ["none", "mixed"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_time_major(mask_kind, go_backwards):
    """ours(time_major) on transposed data: dx comes back time-major."""
    T_.keras_or_skip()
    config = dict(go_backwards=go_backwards, return_sequences=True, return_state=True)
    w = T_.random_weights(F, U)
    kl = T_.built(T_.make_keras(U, "float64", **config), (B, T, F), w)
    ol = T_.built(T_.make_ours(U, "float64", time_major=True, **config), (T, B, F), w)
    x = T_.random_inputs(B, T, F)
    mask = T_.make_mask(mask_kind, B, T)
    init = T_.random_states(B, U)
    xt = np.ascontiguousarray(x.transpose(1, 0, 2))
    mt = None if mask is None else np.ascontiguousarray(mask.T)
    out = T_.call(ol, xt, mt, init, training=True)
    upstream = T_.random_upstream(out)
    keras_up = [upstream[0].transpose(1, 0, 2)] + upstream[1:]
    _, expected = T_.keras_grads(kl, x, keras_up, mask, init)
    grads = ol.backward(tuple(upstream))
    T_.assert_close(grads["inputs"], expected["inputs"].transpose(1, 0, 2), rtol=RTOL,
                    what="d/d inputs (time-major)")
    for key in GRAD_KEYS[1:]:
        T_.assert_close(grads[key], expected[key], rtol=RTOL, what=f"d/d {key}")
