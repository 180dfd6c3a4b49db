"""`Bidirectional` against Keras 3's own wrapper (torch backend, float64, use_cudnn=False).

Same weights in both (set with `set_weights` in Keras's order), same inputs, masks and initial
states; outputs must agree to 1e-12, like the LSTM parity tests.
"""
from __future__ import annotations

import numpy as np
import pytest

try:
    from tests import lstm_testlib as T_
    from tests import bidirectional_testlib as BT
except ImportError:  # tests/ itself on sys.path (pytest's rootdir insertion)
    import lstm_testlib as T_
    import bidirectional_testlib as BT

pytestmark = pytest.mark.keras

B, T, F, U = 6, 5, 3, 4
RTOL = 1e-12
MERGE_MODES = ["concat", "sum", "mul", "ave", None]
OUTPUT_MODES = [(False, False), (True, False), (False, True), (True, True)]


def _compare(merge_mode="concat", mask_kind="mixed", with_state=False, backward=None,
             weights=None, **config):
    weights = weights or BT.both_weights(F, U, (backward or {}).get("units"),
                                         use_bias=config.get("use_bias", True))
    kb, ob = BT.make_pair(U, (B, T, F), weights, merge_mode=merge_mode, backward=backward,
                          **config)
    x = T_.random_inputs(B, T, F)
    mask = T_.make_mask(mask_kind, B, T)
    init = None
    if with_state:
        back_units = (backward or {}).get("units", U)
        init = T_.random_states(B, U) + T_.random_states(B, back_units, seed=7)
    expected = T_.keras_call(kb, x, mask, init)
    got = T_.call(ob, x, mask, init)
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        T_.assert_close(g, e, rtol=RTOL, what=f"output {k}")
    return kb, ob


@pytest.mark.parametrize("merge_mode", MERGE_MODES)
@pytest.mark.parametrize("return_sequences,return_state", OUTPUT_MODES)
def test_merge_modes_and_outputs(merge_mode, return_sequences, return_state):
    _compare(merge_mode, return_sequences=return_sequences, return_state=return_state)


@pytest.mark.parametrize("mask_kind", T_.MASK_KINDS)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_masks(mask_kind, return_sequences):
    """Keras forces zero_output_for_mask = return_sequences on both directions."""
    _compare("concat", mask_kind, return_sequences=return_sequences, return_state=True)


@pytest.mark.parametrize("merge_mode", ["concat", None])
def test_initial_state_split_forward_then_backward(merge_mode):
    _compare(merge_mode, with_state=True, return_sequences=True, return_state=True)


def test_custom_backward_layer_with_other_units_and_activation():
    _compare("concat", with_state=True, return_sequences=True, return_state=True,
             backward={"go_backwards": True, "units": 3, "activation": "softsign",
                       "recurrent_activation": "hard_sigmoid"})


def test_inner_layer_with_go_backwards():
    """Keras 3 sets the copy's go_backwards to True and so rejects an inner go_backwards=True
    layer; we flip it (tf.keras 2), which is Keras 3 with that backward layer given."""
    keras = T_.keras_or_skip()
    from lstm_gpu import Bidirectional

    with pytest.raises(ValueError, match="go_backwards"):
        keras.layers.Bidirectional(T_.make_keras(U, go_backwards=True))
    w = BT.both_weights(F, U)
    kb = keras.layers.Bidirectional(
        T_.make_keras(U, go_backwards=True, return_sequences=True),
        backward_layer=T_.make_keras(U, go_backwards=False, return_sequences=True),
        dtype="float64")
    ob = Bidirectional(T_.make_ours(U, go_backwards=True, return_sequences=True),
                       dtype="float64")
    assert (ob.forward_layer.go_backwards, ob.backward_layer.go_backwards) == (True, False)
    x, mask = T_.random_inputs(B, T, F), T_.make_mask("mixed", B, T)
    for layer in (kb, ob):
        T_.built(layer, (B, T, F), w)
    T_.assert_close(T_.call(ob, x, mask)[0], T_.keras_call(kb, x, mask)[0], rtol=RTOL)


def test_time_major_is_the_transposed_call():
    """Keras 3 has no time_major: ours on (T, B, F) is Keras on (B, T, F), transposed back."""
    kb, _ = BT.make_pair(U, (B, T, F), BT.both_weights(F, U), return_sequences=True,
                         return_state=True)
    from lstm_gpu import Bidirectional

    ob = Bidirectional(T_.make_ours(U, return_sequences=True, return_state=True,
                                    time_major=True), dtype="float64")
    T_.built(ob, (T, B, F), BT.both_weights(F, U))
    x, mask = T_.random_inputs(B, T, F), T_.make_mask("mixed", B, T)
    init = T_.random_states(B, U) + T_.random_states(B, U, seed=7)
    expected = T_.keras_call(kb, x, mask, init)
    got = T_.call(ob, np.ascontiguousarray(x.transpose(1, 0, 2)), np.ascontiguousarray(mask.T),
                  init)
    T_.assert_close(got[0].transpose(1, 0, 2), expected[0], rtol=RTOL, what="sequence")
    for k in range(1, 5):
        T_.assert_close(got[k], expected[k], rtol=RTOL, what=f"state {k}")


def test_regularizers_and_losses():
    kb, ob = _compare("sum", kernel_regularizer="l2", recurrent_regularizer="l1",
                      bias_regularizer="l2", activity_regularizer="l2")
    expected = sum(float(loss.detach().numpy()) for loss in kb.losses)
    assert len(ob.losses) == len(kb.losses) == 8
    # Keras keeps regularizer factors as float32 tensors: agreement to float32 rounding.
    assert T_.total_losses(ob) == pytest.approx(expected, rel=1e-6)


def test_stateful_carries_over_two_calls_then_resets():
    w = BT.both_weights(F, U)
    # Keras 3.15's Bidirectional.compute_mask fails with stateful + return_state (it
    # multiplies a generator), so the states are read from `states` instead.
    kb, ob = BT.make_pair(U, (B, T, F), w, stateful=True, return_sequences=True)
    for seed in (1, 2):
        x = T_.random_inputs(B, T, F, seed=seed)
        for g, e in zip(T_.call(ob, x), T_.keras_call(kb, x)):
            T_.assert_close(g, e, rtol=RTOL)
    for g, e in zip(ob.states, kb.states):
        T_.assert_close(g, e.value.detach().numpy(), rtol=RTOL, what="states")
    ob.reset_states()
    kb.reset_states()
    x = T_.random_inputs(B, T, F, seed=3)
    for g, e in zip(T_.call(ob, x), T_.keras_call(kb, x)):
        T_.assert_close(g, e, rtol=RTOL, what="after reset")


def test_non_stateful_reset_raises_like_keras():
    kb, ob = BT.make_pair(U, (B, T, F), BT.both_weights(F, U))
    with pytest.raises(AttributeError, match="Layer must be stateful"):
        kb.reset_states()
    with pytest.raises(AttributeError, match="Layer must be stateful"):
        ob.reset_states()
    assert ob.states is None and kb.states is None


def test_weights_order_shapes_and_names_match_keras():
    keras = T_.keras_or_skip()
    from lstm_gpu import Bidirectional

    kb = keras.layers.Bidirectional(keras.layers.LSTM(U, name="enc"))
    ob = Bidirectional(T_.make_ours(U, "float32", name="enc"))
    for layer in (kb, ob):
        layer.build((B, T, F))
    assert [w.shape for w in ob.get_weights()] == [w.shape for w in kb.get_weights()]
    assert (ob.forward_layer.name, ob.backward_layer.name) == (kb.forward_layer.name,
                                                               kb.backward_layer.name)
    assert ob.weights[0] is ob.forward_layer.kernel and ob.weights[3] is ob.backward_layer.kernel
    again = keras.layers.Bidirectional(keras.layers.LSTM(U, name="forward_x"))
    ours = Bidirectional(T_.make_ours(U, name="forward_x"))
    assert ours.backward_layer.name == again.backward_layer.name == "backward_forward_x"


def test_set_weights_from_a_keras_layer():
    keras = T_.keras_or_skip()
    from lstm_gpu import Bidirectional

    kb = keras.layers.Bidirectional(T_.make_keras(U, return_sequences=True), dtype="float64")
    kb.build((B, T, F))  # Keras's own random initial weights
    ob = Bidirectional(T_.make_ours(U, return_sequences=True), dtype="float64")
    ob.build((B, T, F))
    ob.set_weights(kb.get_weights())
    for g, e in zip(ob.get_weights(), kb.get_weights()):
        np.testing.assert_array_equal(g, e)
    x = T_.random_inputs(B, T, F)
    T_.assert_close(T_.call(ob, x)[0], T_.keras_call(kb, x)[0], rtol=RTOL)


def test_default_dtype_casts_the_merged_output_like_keras():
    """Keras's wrapper casts the merged output to its own dtype policy (float32 by default),
    not to the inner layers' dtype; states keep the inner dtype."""
    keras = T_.keras_or_skip()
    from lstm_gpu import Bidirectional

    kb = keras.layers.Bidirectional(T_.make_keras(U, return_state=True))
    ob = Bidirectional(T_.make_ours(U, return_state=True))
    x = T_.random_inputs(B, T, F)
    expected = T_.keras_call(kb, x)
    ob.build((B, T, F))
    ob.set_weights(kb.get_weights())
    got = T_.call(ob, x)
    assert [g.dtype for g in got] == [e.dtype for e in expected]
    assert got[0].dtype == np.float32 and got[1].dtype == np.float64
    T_.assert_close(got[0], expected[0], rtol=1e-6)


def test_config_keys_match_keras():
    keras = T_.keras_or_skip()
    from lstm_gpu import Bidirectional

    kc = keras.layers.Bidirectional(keras.layers.LSTM(U, name="enc"), name="bi").get_config()
    oc = Bidirectional(T_.make_ours(U, "float32", name="enc"), name="bi").get_config()
    assert set(oc) == set(kc) == {"name", "trainable", "dtype", "merge_mode", "layer",
                                  "backward_layer"}
    for key in ("layer", "backward_layer"):
        assert {k: oc[key][k] for k in ("module", "class_name", "registered_name")} == \
               {k: kc[key][k] for k in ("module", "class_name", "registered_name")}
        assert set(oc[key]["config"]) == set(kc[key]["config"])
        for k in ("name", "go_backwards", "zero_output_for_mask", "units"):
            assert oc[key]["config"][k] == kc[key]["config"][k], (key, k)
    assert oc["dtype"] == kc["dtype"]


@pytest.mark.parametrize("merge_mode", ["concat", "mul", None])
def test_keras_config_loads_into_ours(merge_mode):
    """A built Keras Bidirectional's config makes ours, built (Keras's build_config), with
    Keras's names and custom backward layer; Keras's weights then give Keras's numbers."""
    keras = T_.keras_or_skip()
    from lstm_gpu import Bidirectional

    kb = keras.layers.Bidirectional(
        T_.make_keras(U, return_sequences=True, return_state=True, name="enc"),
        backward_layer=T_.make_keras(U, go_backwards=True, return_sequences=True,
                                     return_state=True, activation="relu", name="dec"),
        merge_mode=merge_mode, dtype="float64")
    kb.build((B, T, F))
    ob = Bidirectional.from_config(kb.get_config())
    assert ob.built and ob.name == kb.name and ob.merge_mode == merge_mode
    assert (ob.forward_layer.name, ob.backward_layer.name) == ("forward_enc", "dec")
    assert ob.backward_layer.get_config()["activation"] == "relu"
    ob.set_weights(kb.get_weights())
    x, mask = T_.random_inputs(B, T, F), T_.make_mask("mixed", B, T)
    for k, (g, e) in enumerate(zip(T_.call(ob, x, mask), T_.keras_call(kb, x, mask))):
        T_.assert_close(g, e, rtol=RTOL, what=f"output {k}")


def test_our_config_loads_into_keras():
    keras = T_.keras_or_skip()
    from lstm_gpu import Bidirectional

    ob = Bidirectional(T_.make_ours(U, return_sequences=True), merge_mode="ave",
                       dtype="float64")
    ob.build((B, T, F))
    kb = keras.layers.Bidirectional.from_config(ob.get_config())
    assert kb.merge_mode == "ave" and kb.forward_layer.built and kb.backward_layer.built
    assert (kb.forward_layer.name, kb.backward_layer.name) == (ob.forward_layer.name,
                                                               ob.backward_layer.name)
    kb.set_weights(ob.get_weights())
    x = T_.random_inputs(B, T, F)
    T_.assert_close(T_.call(ob, x)[0], T_.keras_call(kb, x)[0], rtol=RTOL)
