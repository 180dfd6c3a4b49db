"""get_config keys are Keras 3's; from_config round-trips; configs move between Keras and us."""
from __future__ import annotations

import numpy as np
import pytest

try:
    from tests import lstm_testlib as T_
except ImportError:  # tests/ itself on sys.path (pytest's rootdir insertion)
    import lstm_testlib as T_

B, T, F, U = 3, 5, 3, 4

CONFIGS = {
    "default": {},
    "sequences_state": {"return_sequences": True, "return_state": True},
    "backwards_zero": {"go_backwards": True, "zero_output_for_mask": True,
                       "return_sequences": True},
    "activations": {"activation": "softsign", "recurrent_activation": "hard_sigmoid"},
    "no_bias": {"use_bias": False, "unit_forget_bias": False},
    "regularized": {"kernel_regularizer": "l2", "recurrent_regularizer": "l1",
                    "bias_regularizer": "l1", "activity_regularizer": "l2"},
    "dropout": {"dropout": 0.25, "recurrent_dropout": 0.125, "seed": 42},
    "stateful": {"stateful": True, "return_state": True},
    "unroll": {"unroll": True, "return_sequences": True},
    "initializers": {"kernel_initializer": "he_normal", "recurrent_initializer": "zeros",
                     "bias_initializer": "ones"},
}
SIMPLE_KEYS = ("units", "activation", "recurrent_activation", "use_bias", "unit_forget_bias",
               "return_sequences", "return_state", "go_backwards", "stateful", "unroll",
               "zero_output_for_mask", "dropout", "recurrent_dropout", "seed", "trainable")


def _ours(config, dtype="float64"):
    return T_.make_ours(U, dtype, **config)


def test_default_config_keys_are_keras_keys():
    assert set(_ours({}).get_config()) == T_.KERAS_CONFIG_KEYS


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_keys_are_keras_keys(name):
    keys = set(_ours(CONFIGS[name]).get_config())
    assert keys == T_.KERAS_CONFIG_KEYS, (
        f"extra {sorted(keys - T_.KERAS_CONFIG_KEYS)}, "
        f"missing {sorted(T_.KERAS_CONFIG_KEYS - keys)}")


def _roundtrip_outputs(config, ours_extra=None, mask_kind="mixed", shape=(B, T, F)):
    from lstm_gpu import LSTM

    config = dict(config, **(ours_extra or {}))
    w = T_.random_weights(F, U, use_bias=config.get("use_bias", True))
    a = T_.built(_ours(config), shape, w)
    b = LSTM.from_config(a.get_config())
    assert type(b) is type(a)
    b = T_.built(b, shape, w)
    x = T_.random_inputs(*shape)
    mask = T_.make_mask(mask_kind, B, T)
    if config.get("time_major") and mask is not None:
        mask = np.ascontiguousarray(mask.T)
    training = bool(config.get("dropout") or config.get("recurrent_dropout"))
    for _ in range(2):  # twice: stateful layers continue from their states
        T_.assert_outputs_close(T_.call(b, x, mask, training=training or None),
                                T_.call(a, x, mask, training=training or None), rtol=0)
    assert b.get_config() == a.get_config()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_from_config_round_trip(name):
    _roundtrip_outputs(CONFIGS[name])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_round_trip(dtype):
    from lstm_gpu import LSTM

    layer = _ours({}, dtype)
    again = LSTM.from_config(layer.get_config())
    again.build((B, T, F))
    assert all(w.dtype == np.dtype(dtype) for w in again.get_weights())


def test_round_trip_keeps_implementation_1():
    """implementation is not in Keras's config; a round trip must still give the same numbers
    (implementation 1 and 2 compute the same function)."""
    _roundtrip_outputs({"return_sequences": True}, {"implementation": 1})


def test_round_trip_keeps_time_major():
    """Keras 3 has no time_major; a config round trip of a time-major layer must not silently
    turn it batch-major."""
    _roundtrip_outputs({"return_sequences": True}, {"time_major": True}, shape=(T, B, F))


# ---------------------------------------------------------------- against Keras itself
@pytest.mark.keras
def test_hard_coded_keys_match_installed_keras():
    keras = T_.keras_or_skip()
    assert set(keras.layers.LSTM(U).get_config()) == T_.KERAS_CONFIG_KEYS


@pytest.mark.keras
@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_like_keras(name):
    keras = T_.keras_or_skip()
    kc = keras.layers.LSTM(U, **CONFIGS[name]).get_config()
    oc = _ours(CONFIGS[name], "float32").get_config()
    assert set(oc) == set(kc)
    diffs = [(key, oc[key], kc[key]) for key in SIMPLE_KEYS if oc[key] != kc[key]]
    for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer",
                "kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
                "activity_regularizer"):
        if kc[key] is None or oc[key] is None:
            if oc[key] != kc[key]:
                diffs.append((key, oc[key], kc[key]))
            continue
        for field in ("module", "class_name", "config"):
            o, k = oc[key].get(field), kc[key].get(field)
            if field == "config" and key.endswith("regularizer") and o and k:
                # Keras's L1 keeps its factor as a float32 tensor: {'l1': 0.009999999776...}
                o = {n: pytest.approx(v, rel=1e-6) for n, v in o.items()}
            if o != k:
                diffs.append((f"{key}.{field}", oc[key].get(field), kc[key].get(field)))
    assert not diffs, "(key, ours, keras): " + "; ".join(map(repr, diffs))


@pytest.mark.keras
@pytest.mark.parametrize("name", ["default", "backwards_zero", "activations", "regularized",
                                  "dropout", "initializers"])
def test_keras_config_loads_into_ours(name):
    """A Keras LSTM's config (dicts for initializers, DTypePolicy dtype) builds our layer, which
    then computes what the Keras layer computes."""
    keras = T_.keras_or_skip()
    from lstm_gpu import LSTM

    kl = keras.layers.LSTM(U, dtype="float64", use_cudnn=False, **CONFIGS[name])
    ol = LSTM.from_config(kl.get_config())
    w = T_.random_weights(F, U, use_bias=CONFIGS[name].get("use_bias", True))
    T_.built(kl, (B, T, F), w)
    T_.built(ol, (B, T, F), w)
    x = T_.random_inputs(B, T, F)
    mask = T_.make_mask("mixed", B, T)
    T_.assert_outputs_close(T_.call(ol, x, mask), T_.keras_call(kl, x, mask), rtol=1e-12)
    assert all(w.dtype == np.float64 for w in ol.get_weights())


@pytest.mark.keras
@pytest.mark.parametrize("name", ["default", "backwards_zero", "activations", "regularized",
                                  "dropout", "initializers"])
def test_our_config_loads_into_keras(name):
    keras = T_.keras_or_skip()
    oc = _ours(CONFIGS[name]).get_config()
    kl = keras.layers.LSTM.from_config(oc)
    kc = kl.get_config()
    for key in SIMPLE_KEYS:
        assert kc[key] == oc[key], key
    assert keras.backend.standardize_dtype(kl.dtype) == "float64"
