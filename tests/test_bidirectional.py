"""`Bidirectional` on its own: construction and its checks, bad input, weights, states,
config round trips, dropout seeds, and the time-reversal symmetry of the wrapper.
Keras parity is in test_bidirectional_keras.py, gradients in test_bidirectional_gradients.py."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

try:
    from tests import lstm_testlib as T_
    from tests import bidirectional_testlib as BT
except ImportError:  # tests/ itself on sys.path (pytest's rootdir insertion)
    import lstm_testlib as T_
    import bidirectional_testlib as BT

from lstm_gpu import LSTM, Bidirectional
from lstm_gpu.compat import v1

B, T, F, U = 3, 5, 2, 3


def _bi(merge_mode="concat", backward_layer=None, **config):
    return Bidirectional(LSTM(U, dtype="float64", **config), merge_mode=merge_mode,
                         backward_layer=backward_layer, dtype="float64")


def _built(bi, shape=(B, T, F)):
    return T_.built(bi, shape, BT.both_weights(F, U))


# ------------------------------------------------------------------ construction
def test_layers_are_fresh_copies_with_keras_names_and_flags():
    inner = LSTM(U, name="enc", return_sequences=True, dropout=0.1, seed=4)
    bi = Bidirectional(inner)
    fw, bw = bi.forward_layer, bi.backward_layer
    assert fw is not inner and bw is not inner
    assert (fw.name, bw.name) == ("forward_enc", "backward_enc")
    assert (fw.go_backwards, bw.go_backwards) == (False, True)
    assert fw.zero_output_for_mask and bw.zero_output_for_mask  # return_sequences forces it
    assert fw.seed == bw.seed == 4  # each direction has its own generator from that seed
    assert fw._mask_generator is not bw._mask_generator
    assert not Bidirectional(LSTM(U, zero_output_for_mask=True)).forward_layer \
        .zero_output_for_mask
    assert inner.zero_output_for_mask is False and not inner.built


def test_copy_of_a_built_layer_is_built_with_fresh_weights():
    inner = T_.built(LSTM(U, dtype="float64"), (B, T, F), T_.random_weights(F, U))
    bi = Bidirectional(inner)
    assert bi.built
    assert not np.array_equal(bi.forward_layer.kernel, inner.kernel)


def test_use_cudnn_and_other_options_reach_both_directions():
    bi = Bidirectional(LSTM(U, use_cudnn=False, implementation=1, unroll=True))
    for sub in (bi.forward_layer, bi.backward_layer):
        assert sub.use_cudnn is False and sub.implementation == 1 and sub.unroll
    custom = LSTM(U, go_backwards=True, use_cudnn=True)
    bi = Bidirectional(LSTM(U, use_cudnn=False), backward_layer=custom)
    assert bi.backward_layer is custom and custom.use_cudnn is False  # Keras: layer's wins


def test_compat_v1_layers_keep_their_class():
    bi = Bidirectional(v1.LSTM(U))
    assert type(bi.forward_layer) is v1.LSTM and type(bi.backward_layer) is v1.LSTM
    again = Bidirectional.from_config(bi.get_config())
    assert type(again.forward_layer) is v1.LSTM and type(again.backward_layer) is v1.LSTM


def test_weights_argument_is_set_at_build():
    w = BT.both_weights(F, U)
    bi = Bidirectional(LSTM(U, dtype="float64"), weights=w)
    bi.build((B, T, F))
    for got, expected in zip(bi.get_weights(), w):
        np.testing.assert_array_equal(got, expected)
    built = T_.built(LSTM(U, dtype="float64"), (B, T, F))
    bi = Bidirectional(built, weights=w)  # built at once: set at once
    np.testing.assert_array_equal(bi.get_weights()[4], w[4])


# ------------------------------------------------------------------ bad input
def test_layer_must_be_an_lstm():
    with pytest.raises(ValueError, match=r"`layer` of Bidirectional must be an lstm_gpu.LSTM"):
        Bidirectional("lstm")
    with pytest.raises(ValueError, match=r"`backward_layer` .* Received: backward_layer=3"):
        Bidirectional(LSTM(U), backward_layer=3)


@pytest.mark.keras
def test_a_keras_layer_gets_a_hint():
    keras = T_.keras_or_skip()
    with pytest.raises(ValueError, match=r"LSTM.from_config\(layer.get_config\(\)\)"):
        Bidirectional(keras.layers.LSTM(U))


@pytest.mark.parametrize("merge_mode", ["max", "", "Concat", 1, ["sum"]])
def test_bad_merge_mode(merge_mode):
    with pytest.raises(ValueError, match=r"Invalid merge mode. Received: merge_mode="):
        Bidirectional(LSTM(U), merge_mode=merge_mode)


@pytest.mark.parametrize("backward,match", [
    (dict(go_backwards=False), "different `go_backwards`"),
    (dict(go_backwards=True, return_sequences=True), 'attribute "return_sequences"'),
    (dict(go_backwards=True, return_state=True), 'attribute "return_state"'),
    (dict(go_backwards=True, stateful=True), 'attribute "stateful"'),
    (dict(go_backwards=True, time_major=True), 'attribute "time_major"'),
])
def test_incompatible_backward_layer(backward, match):
    with pytest.raises(ValueError, match=match):
        Bidirectional(LSTM(U), backward_layer=LSTM(U, **backward))


@pytest.mark.parametrize("merge_mode", ["sum", "mul", "ave"])
def test_elementwise_merge_needs_equal_units(merge_mode):
    with pytest.raises(ValueError, match=r"same units.*units=3.*units=4"):
        Bidirectional(LSTM(U), merge_mode=merge_mode,
                      backward_layer=LSTM(4, go_backwards=True))
    Bidirectional(LSTM(U), backward_layer=LSTM(4, go_backwards=True))  # concat: fine


def test_unknown_keyword_and_bad_weights_argument():
    with pytest.raises(ValueError, match="Unrecognized keyword arguments"):
        Bidirectional(LSTM(U), merge="sum")
    with pytest.raises(ValueError, match="Argument `weights` must be a list"):
        Bidirectional(LSTM(U), weights=np.zeros(3))


@pytest.mark.parametrize("initial_state", [[np.zeros((B, U))] * 2, np.zeros((4, B, U)),
                                           [np.zeros((B, U))] * 5])
def test_initial_state_must_be_four_arrays(initial_state):
    bi = _built(_bi())
    with pytest.raises(ValueError, match=r"`initial_state` of Bidirectional must be a list of "
                                         r"four arrays \[h_fw, c_fw, h_bw, c_bw\]"):
        bi(T_.random_inputs(B, T, F), initial_state=initial_state)


def test_set_weights_checks_the_whole_list_before_changing_anything():
    bi = _built(_bi())
    before = bi.get_weights()
    with pytest.raises(ValueError, match="list of 6 arrays"):
        bi.set_weights(before[:3])
    bad = before[:5] + [np.zeros(7)]
    with pytest.raises(ValueError, match=r"`weights\[5\]` must have shape \(12,\)"):
        bi.set_weights(bad)
    for got, expected in zip(bi.get_weights(), before):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="no weights yet"):
        _bi().set_weights(before)


def test_failed_backward_direction_leaves_the_forward_states_alone():
    backward = T_.built(LSTM(U, go_backwards=True, stateful=True, dtype="float64"),
                        (B, T, F + 1))
    bi = Bidirectional(LSTM(U, stateful=True, dtype="float64"), backward_layer=backward,
                       dtype="float64")
    bi.forward_layer.build((B, T, F))
    bi.forward_layer.reset_states([np.ones((B, U)), np.ones((B, U))])
    before = [s.copy() for s in bi.forward_layer.states]
    with pytest.raises(ValueError, match="features"):
        bi(T_.random_inputs(B, T, F))
    for s, s0 in zip(bi.forward_layer.states, before):
        np.testing.assert_array_equal(s, s0)


def test_failed_call_leaves_record_dropout_stream_and_states_of_both_directions():
    fail = {"now": False}

    def tanh_until_told(v):
        if fail["now"]:
            raise RuntimeError("activation failed")
        return np.tanh(v)

    backward = LSTM(U, go_backwards=True, activation=tanh_until_told, dropout=0.3, seed=2,
                    dtype="float64")
    bi = _built(Bidirectional(LSTM(U, dropout=0.3, seed=1, dtype="float64"),
                              backward_layer=backward, dtype="float64"))
    x = T_.random_inputs(B, T, F)
    out = bi(x, training=True)
    grads = bi.backward(np.ones_like(out))
    forward = bi.forward_layer
    before = (forward._mask_generator.position, forward.last_path, forward._tape)
    twin = copy.deepcopy(bi)  # never sees the failed call
    fail["now"] = True
    with pytest.raises(RuntimeError, match="activation failed"):
        bi(x + 1.0, training=True)
    assert (forward._mask_generator.position, forward.last_path, forward._tape) == before
    fail["now"] = False
    again = bi.backward(np.ones_like(out))
    np.testing.assert_array_equal(again["inputs"], grads["inputs"])
    for direction in ("forward", "backward"):
        np.testing.assert_array_equal(again[direction]["kernel"], grads[direction]["kernel"])
    np.testing.assert_array_equal(bi(x, training=True), twin(x, training=True))


def test_backward_needs_a_training_call_and_a_matching_d_out():
    bi = _built(_bi(None, return_sequences=True))
    x = T_.random_inputs(B, T, F)
    bi(x)
    with pytest.raises(RuntimeError, match="training=True"):
        bi.backward(np.zeros((B, T, U)))
    y, y_rev = bi(x, training=True)
    with pytest.raises(ValueError, match=r"tuple of 2 arrays"):
        bi.backward(np.zeros_like(y))
    with pytest.raises(ValueError, match=r"`d_out\[1\]` must have the output's shape"):
        bi.backward((y, y[:, :1]))
    with pytest.raises(TypeError, match=r"`d_out\[0\]` must have a numeric dtype"):
        bi.backward((np.full(y.shape, "a"), None))
    concat = _built(_bi())
    out = concat(x, training=True)
    with pytest.raises(ValueError, match=r"one array .* shape \(3, 6\)"):
        concat.backward([out])
    with pytest.raises(ValueError, match=r"shape \(3, 6\)"):
        concat.backward(out[:, :U])


def test_reset_states_to_values_and_its_checks():
    bi = _built(_bi(stateful=True))
    values = [np.full((B, U), float(k)) for k in range(4)]
    bi.reset_states(values)
    for got, expected in zip(bi.states, values):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="four arrays"):
        bi.reset_states(values[:2])
    with pytest.raises(ValueError, match="State 1 is incompatible"):
        bi.reset_states(values[:3] + [np.zeros((B, U + 1))])
    for got, expected in zip(bi.states, values):  # the forward half was not changed
        np.testing.assert_array_equal(got, expected)
    bi.reset_state()
    assert not any(np.any(s) for s in bi.states)


# ------------------------------------------------------------------ calls
def test_last_path_and_cudnn_rules_per_direction():
    bi = _built(_bi(recurrent_dropout=0.2))
    assert bi.last_path == (None, None)
    bi(T_.random_inputs(B, T, F))
    assert bi.last_path == (T_.expected_cpu_path(),) * 2
    rules = bi.cudnn_ineligibility(training=True)
    assert any(r.startswith("forward: ") for r in rules)
    assert any(r.startswith("backward: ") for r in rules)
    assert _bi().cudnn_ineligibility() == []


def test_dropout_is_seeded_per_direction_and_reproducible():
    x = T_.random_inputs(B, T, F)
    runs = [T_.call(_built(_bi(dropout=0.5, recurrent_dropout=0.3, seed=7)), x,
                    training=True)[0] for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    plain = T_.call(_built(_bi(dropout=0.5, recurrent_dropout=0.3, seed=7)), x)[0]
    assert not np.allclose(runs[0], plain)


def test_inputs_are_not_changed_and_outputs_do_not_alias_them():
    bi = _built(_bi("mul", return_sequences=True))
    x = T_.random_inputs(B, T, F)
    x0 = x.copy()
    out = bi(x, training=True)
    bi.backward(np.ones_like(out))
    np.testing.assert_array_equal(x, x0)


def test_config_round_trip_keeps_everything():
    inner = LSTM(U, dtype="float64", return_sequences=True, return_state=True, stateful=True,
                 dropout=0.25, seed=3, time_major=True, implementation=1,
                 kernel_regularizer="l2", name="enc")
    bi = Bidirectional(inner, merge_mode="ave", dtype="float64", name="bi", trainable=False,
                       backward_layer=LSTM(U, go_backwards=True, return_sequences=True,
                                           return_state=True, stateful=True, time_major=True,
                                           activation="relu", dtype="float64"))
    again = Bidirectional.from_config(bi.get_config())
    assert again.get_config() == bi.get_config()
    assert again.trainable is False and again.time_major and again.dtype == np.float64
    _built(bi, (T, B, F))
    _built(again, (T, B, F))
    x, mask = T_.random_inputs(T, B, F), T_.make_mask("mixed", B, T).T.copy()
    for _ in range(2):  # stateful: the second call continues from the first
        for g, e in zip(T_.call(again, x, mask), T_.call(bi, x, mask)):
            np.testing.assert_array_equal(g, e)


def test_from_config_rejects_other_layers():
    config = Bidirectional(LSTM(U)).get_config()
    config["layer"]["class_name"] = "GRU"
    with pytest.raises(ValueError, match="wraps LSTM layers only.*'GRU'"):
        Bidirectional.from_config(config)
    config["layer"] = "lstm"
    with pytest.raises(ValueError, match="serialized layer dict"):
        Bidirectional.from_config(config)


# ------------------------------------------------------------------ a property
@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), steps=st.integers(1, 5), features=st.integers(1, 3),
       units=st.integers(1, 3), merge_mode=st.sampled_from(["concat", "sum", "mul", "ave"]),
       return_sequences=st.booleans(), seed=st.integers(0, 2**16))
def test_reversing_time_mirrors_the_output(batch, steps, features, units, merge_mode,
                                           return_sequences, seed):
    """With the same weights in both directions, the wrapper on x reversed in time is the
    wrapper on x with its output reversed in time (and, for concat, its halves swapped)."""
    bi = Bidirectional(LSTM(units, dtype="float64", return_sequences=return_sequences),
                       merge_mode=merge_mode, dtype="float64")
    w = T_.random_weights(features, units, seed=seed)
    T_.built(bi, (batch, steps, features), w + w)
    x = T_.random_inputs(batch, steps, features, seed=seed + 1)
    out, out_rev = bi(x), bi(x[:, ::-1])
    if return_sequences:
        out = out[:, ::-1]
    if merge_mode == "concat":
        out = np.concatenate([out[..., units:], out[..., :units]], axis=-1)
    np.testing.assert_allclose(out_rev, out, rtol=1e-12, atol=1e-13)
