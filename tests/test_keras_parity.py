"""Forward parity of our NumPy path with Keras 3 itself (torch backend, generic cell loop).

Same random, non-symmetric weights in both layers (set_weights). Keras runs with
use_cudnn=False: its torch fast path handles masks differently and sums in another order;
the generic loop follows the TF-backend masking rule that our NumPy path implements
(masked steps carry h and c; sequence outputs carry the previous *output*, starting at zeros).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path (pytest's rootdir insertion)
    import lstm_testlib as T_

pytestmark = pytest.mark.usefixtures("cpu_path")

B, T, F, U = 6, 5, 3, 4
RTOL = {"float64": 1e-12, "float32": 2e-6}


def _pair(dtype, weights_seed=0, w_scale=0.5, use_bias=True, ours_extra=None, **config):
    """(ours, keras) built on (B, T, F) with the same random weights."""
    T_.keras_or_skip()
    w = T_.random_weights(F, U, use_bias=use_bias, scale=w_scale, dtype=dtype,
                          seed=weights_seed)
    kl = T_.built(T_.make_keras(U, dtype, use_bias=use_bias, **config), (B, T, F), w)
    ol = T_.built(T_.make_ours(U, dtype, use_bias=use_bias, **config, **(ours_extra or {})),
                  (B, T, F), w)
    return ol, kl


def _data(dtype, mask_kind, with_state, x_scale=1.0, seed=1):
    x = T_.random_inputs(B, T, F, scale=x_scale, dtype=dtype, seed=seed)
    mask = T_.make_mask(mask_kind, B, T)
    init = T_.random_states(B, U, dtype=dtype) if with_state else None
    return x, mask, init


def _check(dtype, mask_kind="mixed", with_state=True, x_scale=1.0, w_scale=0.5,
           use_bias=True, what="", **config):
    ol, kl = _pair(dtype, w_scale=w_scale, use_bias=use_bias, **config)
    x, mask, init = _data(dtype, mask_kind, with_state, x_scale)
    expected = T_.keras_call(kl, x, mask, init)
    got = T_.call(ol, x, mask, init)
    T_.assert_outputs_close(got, expected, rtol=RTOL[dtype], what=what or str(config))
    for g in got:
        assert isinstance(g, np.ndarray), type(g)
        assert g.dtype == np.dtype(dtype), (g.dtype, dtype)
    assert ol.last_path == T_.expected_cpu_path()
    return ol, kl


# ---------------------------------------------------------------- masks x options
OPTIONS = list(itertools.product([False, True], [False, True], [False, True]))


@pytest.mark.keras
@pytest.mark.parametrize("mask_kind", T_.MASK_KINDS)
@pytest.mark.parametrize("go_backwards,return_sequences,zero_output_for_mask", OPTIONS)
def test_masks_and_options_float64(mask_kind, go_backwards, return_sequences,
                                   zero_output_for_mask):
    _check("float64", mask_kind, with_state=True, go_backwards=go_backwards,
           return_sequences=return_sequences, zero_output_for_mask=zero_output_for_mask,
           return_state=True)


@pytest.mark.keras
@pytest.mark.parametrize("mask_kind", T_.MASK_KINDS)
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_masks_float32(mask_kind, go_backwards, zero_output_for_mask):
    _check("float32", mask_kind, with_state=True, go_backwards=go_backwards,
           return_sequences=True, return_state=True,
           zero_output_for_mask=zero_output_for_mask)


@pytest.mark.keras
@pytest.mark.parametrize("mask_kind", T_.MASK_KINDS)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_default_zero_initial_state(mask_kind, return_sequences):
    _check("float64", mask_kind, with_state=False, return_sequences=return_sequences,
           return_state=True)


@pytest.mark.keras
@pytest.mark.parametrize("return_sequences", [False, True])
def test_plain_output_is_an_array(return_sequences):
    """Without return_state the call returns one array, not a tuple."""
    ol, _ = _check("float64", "none", with_state=False, return_sequences=return_sequences)
    out = ol(T_.random_inputs(B, T, F))
    assert isinstance(out, np.ndarray)
    assert out.shape == ((B, T, U) if return_sequences else (B, U))


@pytest.mark.keras
def test_left_masked_steps_output_zeros_not_h0():
    """TF/torch rule: masked steps before the first valid one output 0, even with h0 != 0."""
    ol, kl = _check("float64", "left", with_state=True, return_sequences=True,
                    return_state=True)
    x, mask, init = _data("float64", "left", True)
    out = T_.call(ol, x, mask, init)[0]
    assert np.all(out[0, : T - 1] == 0.0)  # row 0: only the last step is valid
    keras_out = T_.keras_call(kl, x, mask, init)[0]  # Keras-torch generic loop: same rule
    assert np.all(keras_out[0, : T - 1] == 0.0)


@pytest.mark.keras
def test_fully_masked_row_keeps_initial_state():
    ol, _ = _check("float64", "full", with_state=True, return_sequences=False,
                   return_state=True)
    x, mask, init = _data("float64", "full", True)
    out, h, c = T_.call(ol, x, mask, init)
    assert np.all(out[0] == 0.0)
    np.testing.assert_array_equal(h[0], init[0][0])
    np.testing.assert_array_equal(c[0], init[1][0])


# ---------------------------------------------------------------- activations
def _scales(name):
    # keep pre-activations small for the exponential (and its growth through c)
    return (0.3, 0.05) if name == "exponential" else (1.0, 0.5)


@pytest.mark.keras
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", T_.KERAS_ACTIVATIONS)
def test_activation(name, dtype):
    xs, ws = _scales(name)
    _check(dtype, "mixed", with_state=True, x_scale=xs, w_scale=ws, activation=name,
           return_sequences=True, return_state=True)


@pytest.mark.keras
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", T_.KERAS_ACTIVATIONS)
def test_recurrent_activation(name, dtype):
    xs, ws = _scales(name)
    _check(dtype, "mixed", with_state=True, x_scale=xs, w_scale=ws,
           recurrent_activation=name, return_sequences=True, return_state=True)


@pytest.mark.keras
def test_activation_none_is_linear():
    _check("float64", "mixed", activation=None, recurrent_activation=None,
           return_sequences=True, return_state=True)


@pytest.mark.keras
def test_keras_hard_sigmoid_is_keras3_formula():
    """Keras 3 hard_sigmoid = clip(x/6 + 0.5, 0, 1) (not Keras 2's 0.2x + 0.5)."""
    keras = T_.keras_or_skip()
    xs = np.array([-3.5, -3, -2.5, -1, 0, 1, 2.5, 3, 3.5])
    got = keras.ops.convert_to_numpy(keras.activations.hard_sigmoid(xs))
    np.testing.assert_allclose(got, np.clip(xs / 6 + 0.5, 0, 1), rtol=1e-6)
    # large pre-activations so that the gates visit the clipped regions
    _check("float64", "none", with_state=True, x_scale=4.0, w_scale=1.5,
           recurrent_activation="hard_sigmoid", return_sequences=True, return_state=True)


# ---------------------------------------------------------------- implementation, bias, unroll
@pytest.mark.keras
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mask_kind", ["none", "mixed"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_implementation_1(dtype, mask_kind, go_backwards):
    _check(dtype, mask_kind, implementation=1, go_backwards=go_backwards,
           return_sequences=True, return_state=True)


@pytest.mark.keras
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("mask_kind", ["none", "mixed"])
@pytest.mark.parametrize("implementation", [1, 2])
def test_use_bias_false(dtype, mask_kind, implementation):
    ol, _ = _check(dtype, mask_kind, use_bias=False, implementation=implementation,
                   return_sequences=True, return_state=True)
    assert len(ol.get_weights()) == 2


@pytest.mark.keras
@pytest.mark.parametrize("mask_kind", T_.MASK_KINDS)
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
def test_unroll(mask_kind, go_backwards, zero_output_for_mask):
    """unroll=True gives the generic loop's numbers. Keras-torch crashes on unroll +
    go_backwards + mask (torch.flip on a tuple), so that case compares with Keras unroll=False."""
    keras_unroll = not (go_backwards and mask_kind != "none")
    ol, kl = _pair("float64", unroll=keras_unroll, go_backwards=go_backwards,
                   return_sequences=True, return_state=True,
                   zero_output_for_mask=zero_output_for_mask)
    ours = T_.built(T_.make_ours(U, "float64", unroll=True, go_backwards=go_backwards,
                                 return_sequences=True, return_state=True,
                                 zero_output_for_mask=zero_output_for_mask),
                    (B, T, F), kl.get_weights())
    x, mask, init = _data("float64", mask_kind, True)
    expected = T_.keras_call(kl, x, mask, init)
    T_.assert_outputs_close(T_.call(ours, x, mask, init), expected, rtol=1e-12)


@pytest.mark.keras
@pytest.mark.parametrize("unit_forget_bias", [True, False])
@pytest.mark.parametrize("bias_initializer", ["zeros", "ones"])
def test_built_bias_unit_forget_bias(unit_forget_bias, bias_initializer):
    """Forget block is *replaced* by 1.0 (not added); other blocks from the initializer."""
    keras = T_.keras_or_skip()
    kl = keras.layers.LSTM(U, unit_forget_bias=unit_forget_bias,
                           bias_initializer=bias_initializer)
    kl.build((B, T, F))
    ol = T_.make_ours(U, "float32", unit_forget_bias=unit_forget_bias,
                      bias_initializer=bias_initializer)
    ol.build((B, T, F))
    kw, ow = kl.get_weights(), ol.get_weights()
    assert [w.shape for w in ow] == [w.shape for w in kw] == [(F, 4 * U), (U, 4 * U), (4 * U,)]
    assert all(w.dtype == np.float32 for w in ow)
    np.testing.assert_array_equal(ow[2], kw[2])


@pytest.mark.keras
def test_built_weights_use_bias_false():
    keras = T_.keras_or_skip()
    kl = keras.layers.LSTM(U, use_bias=False)
    kl.build((B, T, F))
    ol = T_.make_ours(U, "float32", use_bias=False)
    ol.build((B, T, F))
    assert [w.shape for w in ol.get_weights()] == [w.shape for w in kl.get_weights()]


# ---------------------------------------------------------------- stateful
def _states(layer):
    return [np.array(T_.to_numpy(s)) for s in layer.states]


def _keras_states(kl):
    keras = T_.keras_or_skip()
    return [keras.ops.convert_to_numpy(s) for s in kl.states]


@pytest.mark.keras
@pytest.mark.parametrize("mask_kind", ["none", "mixed"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_stateful_consecutive_calls(mask_kind, go_backwards, dtype):
    ol, kl = _pair(dtype, stateful=True, return_sequences=True, return_state=True,
                   go_backwards=go_backwards)
    x, mask, _ = _data(dtype, mask_kind, False)
    x2 = T_.random_inputs(B, T, F, dtype=dtype, seed=11)
    rtol = RTOL[dtype]
    for k, xx in enumerate([x, x2, x]):
        expected = T_.keras_call(kl, xx, mask)
        got = T_.call(ol, xx, mask)
        T_.assert_outputs_close(got, expected, rtol=rtol, what=f"call {k}")
        for s, (g, e) in enumerate(zip(_states(ol), _keras_states(kl))):
            T_.assert_close(g, e, rtol=rtol, what=f"call {k} layer.states[{s}]")
    # reset_state: back to zeros, the next call equals the first one
    kl.reset_state()
    ol.reset_state()
    for g in _states(ol):
        assert np.all(g == 0)
    T_.assert_outputs_close(T_.call(ol, x, mask), T_.keras_call(kl, x, mask), rtol=rtol,
                            what="after reset_state")


@pytest.mark.keras
def test_stateful_initial_state_wins_and_is_stored():
    ol, kl = _pair("float64", stateful=True, return_state=True)
    x, mask, init = _data("float64", "mixed", True)
    T_.call(ol, x, mask)
    T_.keras_call(kl, x, mask)
    expected = T_.keras_call(kl, x, mask, init)  # explicit initial_state takes precedence
    got = T_.call(ol, x, mask, init)
    T_.assert_outputs_close(got, expected, rtol=1e-12)
    for g, e in zip(_states(ol), _keras_states(kl)):
        T_.assert_close(g, e, rtol=1e-12, what="stored states")
    for g, e in zip(_states(ol), got[1:]):
        T_.assert_close(g, e, rtol=0, atol=0, what="stored states == returned h, c")


def test_reset_states_with_values():
    """tf.keras 2 style reset_states(states): the given values become the stored states."""
    w = T_.random_weights(F, U)
    ol = T_.built(T_.make_ours(U, stateful=True, return_state=True), (B, T, F), w)
    vals = T_.random_states(B, U, seed=9)
    ol.reset_states(vals)
    for g, e in zip(_states(ol), vals):
        np.testing.assert_array_equal(g, e)
    x = T_.random_inputs(B, T, F)
    fresh = T_.built(T_.make_ours(U, return_state=True), (B, T, F), w)
    T_.assert_outputs_close(T_.call(ol, x), T_.call(fresh, x, initial_state=vals), rtol=0)
    ol.reset_states()
    for g in _states(ol):
        assert np.all(g == 0)


# ---------------------------------------------------------------- time_major
@pytest.mark.keras
@pytest.mark.parametrize("mask_kind", ["none", "right", "mixed"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_time_major_equals_keras_on_transposed_data(mask_kind, go_backwards,
                                                    return_sequences):
    """Keras 3 rejects time_major; ours(time_major)(x.T, mask.T) == Keras(x, mask)."""
    kw = dict(go_backwards=go_backwards, return_sequences=return_sequences,
              return_state=True)
    T_.keras_or_skip()
    w = T_.random_weights(F, U)
    kl = T_.built(T_.make_keras(U, "float64", **kw), (B, T, F), w)
    ol = T_.built(T_.make_ours(U, "float64", time_major=True, **kw), (T, B, F), w)
    x, mask, init = _data("float64", mask_kind, True)
    expected = list(T_.keras_call(kl, x, mask, init))
    if return_sequences:
        expected[0] = expected[0].transpose(1, 0, 2)
    got = T_.call(ol, np.ascontiguousarray(x.transpose(1, 0, 2)),
                  None if mask is None else np.ascontiguousarray(mask.T), init)
    T_.assert_outputs_close(got, expected, rtol=1e-12)


# ---------------------------------------------------------------- dtypes
@pytest.mark.keras
def test_float64_input_to_float32_layer_gives_float32():
    ol, kl = _pair("float32", return_state=True)
    x = T_.random_inputs(B, T, F, dtype="float64")
    expected = T_.keras_call(kl, x)
    got = T_.call(ol, x)
    assert all(g.dtype == np.float32 for g in got)
    assert all(e.dtype == np.float32 for e in expected)
    T_.assert_outputs_close(got, expected, rtol=RTOL["float32"])


@pytest.mark.keras
def test_keras_default_torch_path_agrees_without_mask():
    """Keras's default (use_cudnn="auto" -> torch _fallback_lstm on CPU) agrees too."""
    ol, kl = _pair("float64", use_cudnn="auto", return_sequences=True, return_state=True)
    x, _, init = _data("float64", "none", True)
    T_.assert_outputs_close(T_.call(ol, x, None, init), T_.keras_call(kl, x, None, init),
                            rtol=1e-12)


def test_integer_inputs_are_accepted():
    w = T_.random_weights(F, U, dtype="float32")
    ol = T_.built(T_.make_ours(U, "float32"), (B, T, F), w)
    xi = np.arange(B * T * F).reshape(B, T, F) % 5 - 2
    got = ol(xi)
    assert got.dtype == np.float32
    T_.assert_close(got, ol(xi.astype(np.float32)), rtol=1e-6)


def test_float16_computes_in_float32():
    w = T_.random_weights(F, U, dtype="float16")
    x = T_.random_inputs(B, T, F, dtype="float16")
    mask = T_.make_mask("mixed", B, T)
    o16 = T_.built(T_.make_ours(U, "float16", return_sequences=True, return_state=True),
                   (B, T, F), w)
    o32 = T_.built(T_.make_ours(U, "float32", return_sequences=True, return_state=True),
                   (B, T, F), [a.astype(np.float32) for a in w])
    got = T_.call(o16, x, mask)
    ref = T_.call(o32, x.astype(np.float32), mask)
    for g, r in zip(got, ref):
        assert g.dtype == np.float16
        # computed in float32, rounded once when stored: within float16 rounding of it
        np.testing.assert_allclose(g.astype(np.float32), r, rtol=2e-3, atol=2e-3)


# ---------------------------------------------------------------- regularizer losses
_REG = dict(kernel_regularizer="l2", recurrent_regularizer="l1", bias_regularizer="l1",
            activity_regularizer="l2")


@pytest.mark.keras
@pytest.mark.parametrize("return_state", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_losses_total_like_keras(return_state, return_sequences):
    """Activity regularizer: on every output (h and c too with return_state), / batch size.
    Keras computes the regularizer factors in float32, hence rtol 1e-6."""
    ol, kl = _pair("float64", return_state=return_state, return_sequences=return_sequences,
                   **_REG)
    x, mask, init = _data("float64", "mixed", True)
    for _ in range(2):  # losses are those of the last call, they do not pile up
        T_.keras_call(kl, x, mask, init)
        T_.call(ol, x, mask, init)
    e = sum(float(np.asarray(l.detach())) for l in kl.losses)
    assert T_.total_losses(ol) == pytest.approx(e, rel=1e-6)


@pytest.mark.keras
def test_losses_list_like_keras():
    ol, kl = _pair("float64", return_state=True, **_REG)
    x, mask, init = _data("float64", "mixed", True)
    T_.keras_call(kl, x, mask, init)
    T_.call(ol, x, mask, init)
    e = sorted(float(np.asarray(l.detach())) for l in kl.losses)
    g = sorted(float(np.asarray(T_.to_numpy(l))) for l in ol.losses)
    assert len(g) == len(e) == 6
    np.testing.assert_allclose(g, e, rtol=1e-6)


@pytest.mark.keras
def test_weight_regularizer_losses_before_any_call():
    ol, kl = _pair("float64", **{k: v for k, v in _REG.items() if k != "activity_regularizer"})
    e = sorted(float(np.asarray(l.detach())) for l in kl.losses)
    g = sorted(float(np.asarray(T_.to_numpy(l))) for l in ol.losses)
    np.testing.assert_allclose(g, e, rtol=1e-6)


# ---------------------------------------------------------------- tf.compat.v1 LSTM
def _keras2_hard_sigmoid():
    keras = T_.keras_or_skip()
    ops = keras.ops
    return lambda z: ops.clip(0.2 * z + 0.5, 0.0, 1.0)


def test_compat_v1_defaults():
    from lstm_gpu.compat.v1 import LSTM as V1

    layer = V1(U)
    assert layer.get_config()["recurrent_activation"] == "hard_sigmoid"
    assert getattr(layer, "implementation", 1) == 1


@pytest.mark.keras
@pytest.mark.parametrize("mask_kind", ["none", "mixed"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compat_v1_is_keras2_hard_sigmoid(mask_kind, dtype):
    """compat.v1 LSTM == Keras 3 LSTM with recurrent_activation = clip(0.2x + 0.5, 0, 1),
    implementation 1; large pre-activations so that the clipping (|x| > 2.5) matters."""
    from lstm_gpu.compat.v1 import LSTM as V1

    T_.keras_or_skip()
    w = T_.random_weights(F, U, scale=1.5, dtype=dtype)
    kw = dict(return_sequences=True, return_state=True)
    kl = T_.built(T_.make_keras(U, dtype, recurrent_activation=_keras2_hard_sigmoid(),
                                implementation=1, **kw), (B, T, F), w)
    ol = T_.built(V1(U, dtype=dtype, **kw), (B, T, F), w)
    x, mask, init = _data(dtype, mask_kind, True, x_scale=3.0)
    T_.assert_outputs_close(T_.call(ol, x, mask, init), T_.keras_call(kl, x, mask, init),
                            rtol=RTOL[dtype])
    # and it is not Keras 3's hard_sigmoid
    k3 = T_.built(T_.make_ours(U, dtype, recurrent_activation="hard_sigmoid", **kw),
                  (B, T, F), w)
    assert not np.allclose(T_.call(k3, x, mask, init)[0], T_.call(ol, x, mask, init)[0])


def test_compat_v1_hard_sigmoid_values():
    """Keras 2 formula, reference values: clip(0.2x + 0.5, 0, 1)."""
    from lstm_gpu.compat.v1 import LSTM as V1

    xs = np.array([-3.5, -3, -2.5, -1, 0, 1, 2.5, 3, 3.5])
    expected = np.array([0, 0, 0, 0.3, 0.5, 0.7, 1, 1, 1])
    # one unit, one feature, one step: i = hsig(x); f = hsig(-10) = 0; candidate
    # tanh(atanh(0.5)) = 0.5; o = hsig(10) = 1  ->  h = tanh(0.5 * hsig(x))
    kernel = np.array([[1.0, 0.0, 0.0, 0.0]])
    recurrent = np.zeros((1, 4))
    bias = np.array([0.0, -10.0, np.arctanh(0.5), 10.0])
    layer = T_.built(V1(1, dtype="float64"), (len(xs), 1, 1), [kernel, recurrent, bias])
    h = layer(xs.reshape(-1, 1, 1))
    np.testing.assert_allclose(h[:, 0], np.tanh(expected * 0.5), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- mask dtypes, no aliasing
@pytest.mark.keras
@pytest.mark.parametrize("mask_dtype", ["int32", "float32", "float64", "uint8"])
def test_non_bool_mask_is_cast_to_bool(mask_dtype):
    """Keras casts the mask to bool: non-zero = keep."""
    ol, kl = _pair("float64", return_sequences=True, return_state=True)
    x, mask, init = _data("float64", "mixed", True)
    expected = T_.keras_call(kl, x, mask, init)
    T_.assert_outputs_close(T_.call(ol, x, mask.astype(mask_dtype), init), expected,
                            rtol=1e-12)


def test_call_and_backward_do_not_modify_arguments():
    w = T_.random_weights(F, U)
    ol = T_.built(T_.make_ours(U, return_sequences=True, return_state=True), (B, T, F), w)
    x, mask, init = _data("float64", "mixed", True)
    copies = [a.copy() for a in (x, mask, *init)]
    out = T_.call(ol, x, mask, init, training=True)
    upstream = T_.random_upstream(out)
    up_copies = [u.copy() for u in upstream]
    ol.backward(tuple(upstream))
    for a, b in zip((x, mask, *init), copies):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(upstream, up_copies):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(ol.get_weights(), w):
        np.testing.assert_array_equal(a, b)


def test_weights_are_copied_in_and_out():
    """Like Keras: get_weights returns copies, set_weights copies the given arrays."""
    w = T_.random_weights(F, U)
    given = [a.copy() for a in w]
    ol = T_.make_ours(U)
    ol.build((B, T, F))
    ol.set_weights(given)  # not T_.built(): it copies
    x = T_.random_inputs(B, T, F)
    before = ol(x)
    for a in given:
        a += 1.0
    for a in ol.get_weights():
        a += 1.0
    np.testing.assert_array_equal(ol(x), before)
    for a, b in zip(ol.get_weights(), w):
        np.testing.assert_array_equal(a, b)
